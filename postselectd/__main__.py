import sys

from postselectd.cli import main

sys.exit(main())
