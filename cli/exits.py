"""The exit codes of the ``runlytics`` command (the package's docstring and README say when each is used)."""

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_BUG = 1  # an unexpected error, said with its traceback: Python's own exit code for one
EXIT_USAGE = 2
EXIT_WAREHOUSE = 3
EXIT_NO_NVML = 3
EXIT_NOT_SERVING = 3  # serve: the server did not start (uvicorn's own exit code for that)
EXIT_QUERY = 4
EXIT_NO_MEMORY = 71  # out of memory (sysexits' EX_OSERR: a resource of the system ran out)
EXIT_OUTPUT = 74  # stdout could not be written, the work done (sysexits' EX_IOERR)
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command it interrupted (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a reader that stopped early
