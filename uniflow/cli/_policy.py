"""``uniflow policy init``, ``check`` and ``sign``: who may change what (docs/governance.md)."""

from __future__ import annotations

from collections.abc import Callable

import click

from ._common import F, echo_json, get_registry, json_option, repo_option

__all__ = ["policy_group"]


def _trust_root_option(help_text: str) -> Callable[[F], F]:
    """``--trust-root FILE`` (keyword ``trust_root``), as 'policy check' and 'policy sign' take it."""
    return click.option(
        "--trust-root",
        "trust_root",
        metavar="FILE",
        default=None,
        type=click.Path(dir_okay=False),
        help=help_text,
    )


@click.group("policy")
def policy_group() -> None:
    """Who may promote to each stage and who may change that: .uniflow/policy.toml and
    .uniflow/allowed_signers, changed only by commits the admins sign (docs/governance.md)."""


@policy_group.command("init")
@click.option(
    "--admin",
    "admin",
    required=True,
    metavar="PRINCIPAL",
    help="Who administers the policy: the identity of your signing key, e.g. your email.",
)
@click.option(
    "--key",
    "key",
    metavar="PUBKEY",
    default=None,
    help="The admin's SSH public key: a .pub file or an 'ssh-ed25519 AAAA...' line "
    "(default: the key Git signs with, user.signingKey).",
)
@json_option
@repo_option
def init_cmd(admin: str, key: str | None, as_json: bool, repo: str | None) -> None:
    """Write a starting policy for you to commit, signed.

    Writes .uniflow/policy.toml and .uniflow/allowed_signers. PRINCIPAL administers
    the policy and is the only releaser: production then needs a signed promotion from
    staging. Refuses to overwrite existing files.
    \f
    Calls ModelRegistry.policy_init(--admin, key=--key).
    """
    result = get_registry(repo).policy_init(admin, key)
    if as_json:
        echo_json(result.to_dict())
        return
    source = f"key from {result.key_source}" if result.key_source else "no key yet"
    click.echo(f"Wrote .uniflow/policy.toml and .uniflow/allowed_signers (admin {admin}, {source}).")
    if result.key_source is None:
        click.echo(
            f"Add {admin}'s key to .uniflow/allowed_signers first: a line "
            f"'{admin} namespaces=\"git\" ssh-ed25519 AAAA...' (your key's .pub file)."
        )
    click.echo("Next: commit both files signed with the admin's key, then check the policy:")
    click.echo("  git add .uniflow/policy.toml .uniflow/allowed_signers")
    click.echo('  git commit -S -m "uniflow policy"')
    click.echo("  uniflow policy check")


@policy_group.command("check")
@_trust_root_option(
    "An allowed-signers file naming the admins you trust; the chain starts at the first "
    "policy they signed (default: the first policy this clone saw, recorded on the first check)."
)
@json_option
@repo_option
def check_cmd(trust_root: str | None, as_json: bool, repo: str | None) -> None:
    """Verify the policy chain and show the policy in force.

    Reads the history of the default branch. Each change of .uniflow/policy.toml or
    .uniflow/allowed_signers counts only when its commit is signed by the admins of the
    policy before it; the chain starts at the trust root, which is shown. Rejected changes
    are listed and the policy before them stays in force.
    \f
    Calls ModelRegistry.policy_check(trust_root=--trust-root).
    """
    from .._ops.policy import keyed_principals, undeclared_stages

    registry = get_registry(repo)
    chain = registry.policy_check(trust_root)
    keyed = keyed_principals(chain.in_force)
    if as_json:
        echo_json(chain.to_dict(keyed))
        return
    click.echo(chain.describe(keyed))
    for stage in undeclared_stages(registry.repository, chain.in_force):
        click.echo(f"warning: the policy sets a rule for stage {stage!r}, which is not declared", err=True)
    verdicts = chain.revisions
    first = next((i for i, v in enumerate(verdicts) if v.accepted), len(verdicts))
    rejected = [v for v in verdicts[first:] if not v.accepted]
    if rejected:
        click.echo(
            f"warning: {len(rejected)} policy revision(s) did not take effect (see 'revisions' above)",
            err=True,
        )


@policy_group.command("sign")
@_trust_root_option(
    "An allowed-signers file naming the admins you trust, as for 'policy check' "
    "(default: the first policy this clone saw)."
)
@json_option
@repo_option
def sign_cmd(trust_root: str | None, as_json: bool, repo: str | None) -> None:
    """Co-sign the work tree's change of the policy files.

    Signs the change that .uniflow/policy.toml and .uniflow/allowed_signers in the work tree
    make to the policy in force (their content and the revision they replace, not a commit)
    with the key Git signs with (gpg.format=ssh, user.signingKey), and writes
    .uniflow/policy-signatures/<you>.sig. Commit it in the same change: with the commit's own
    signature, the admins' co-signatures count toward the policy's threshold, and they survive
    a squash or rebase merge. Refuses when your key is no admin's in the allowed signers in
    force.
    \f
    Calls ModelRegistry.policy_sign(trust_root=--trust-root).
    """
    result = get_registry(repo).policy_sign(trust_root)
    if as_json:
        echo_json(result.to_dict())
        return
    click.echo(f"Signed as {result.principal}: the change from {result.previous[:12]} to")
    for line in result.statement.splitlines()[4:]:
        click.echo(f"  {line}")
    click.echo(f"Wrote {result.path}")
    have = len(result.cosigners)
    click.echo(
        f"{have} of {result.threshold} admin signature(s) present as co-signatures "
        f"({', '.join(result.cosigners)}); an admin's signed commit counts too."
    )
    for line in result.ignored:
        click.echo(f"not counted: {line}", err=True)
    click.echo("Next: commit it with the change, e.g. git add .uniflow && git commit -S")
