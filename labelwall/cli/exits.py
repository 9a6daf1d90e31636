"""Exit codes of the `labelwall` commands, as kubectl and linters use them."""

#: Clean: nothing found, nothing failed.
EXIT_OK = 0
#: Findings (warnings with --strict, changed reachability), or the action failed.
EXIT_FINDINGS = 1
#: Usage or input error: nothing was compiled or applied.
EXIT_INVALID = 2
