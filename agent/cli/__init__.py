"""The technician's command line: `coopagent ...`."""
