import sys

from exdistill.cli import main

sys.exit(main())
