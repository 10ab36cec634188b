import sys

from grouprl.cli.main import main

sys.exit(main())
