import sys

from sambay.cli.main import main

sys.exit(main())
