#!/usr/bin/env python
"""sepconc command line: `python launch.py COMMAND --help`.

Only parses the command line and calls the library; every command lives in
`sepconc/cli/`. A `UserError` becomes one line on stderr and exit status 2.
"""

import sys

from sepconc.cli import main

if __name__ == "__main__":
    sys.exit(main())
