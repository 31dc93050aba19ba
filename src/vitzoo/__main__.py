import sys

from vitzoo.cli import main

sys.exit(main())
