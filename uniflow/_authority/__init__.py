"""Authority: who signed a version or an event, and whether the policy in force allowed it."""
