import sys

from fetchdeliver.cli import main

sys.exit(main())
