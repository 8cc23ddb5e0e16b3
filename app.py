"""ITJNER demo app: `python app.py [--checkpoint DIR] [--host 127.0.0.1] [--port 7860] ...` (the same as `itjner app`).
The app itself is the package itjner/app/."""
import sys

from itjner.app import main

if __name__ == "__main__":
    sys.exit(main())
