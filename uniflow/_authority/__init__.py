"""Authority: who made a version or a lifecycle event, in Git's own SSH signing format.

``sshsig`` reads, verifies and makes SSH signatures (OpenSSH's ``PROTOCOL.sshsig``, what
``ssh-keygen -Y sign`` and ``git commit -S`` with ``gpg.format=ssh`` write); ``signing``
finds the key in Git's settings and signs in-process or through ``ssh-keygen``/``ssh-agent``;
``allowed_signers`` reads Git's and OpenSSH's allowed-signers files and turns a signature
into a :class:`~uniflow._authority.allowed_signers.Verdict`; ``gitsign`` signs and verifies
commit and tag objects as Git does. Verification needs only the ``cryptography`` package
(the ``signing`` extra), no OpenSSH binary and no network; it is imported on first use.

Empty on purpose: importing one module must not import its siblings.
"""
