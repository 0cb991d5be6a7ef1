import sys

from mtgan.cli import main

sys.exit(main())
