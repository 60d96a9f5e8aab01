"""`python -m journey_client COMMAND`: the client commands without the server installed."""

import sys

from journey_client.cli import main

sys.exit(main())
