import sys

from ozwald.cli import main

sys.exit(main())
