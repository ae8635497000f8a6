"""What the SDK scripts in this folder share: the models they are given, the tool the fakes
call, and one output line per check.

The scripts are run by the edge's Rust tests (each script's docstring says which, and with what
environment). Python puts a script's own folder first on `sys.path`, so `import sdk_check`
finds this file.
"""

import importlib
import os
import sys

# What the fakes in test-support do with tools: call the first tool offered with this input,
# then answer "The tool said: <result>".
TOOL_INPUT = {"location": "Paris"}
TOOL_NAME = "get_weather"
TOOL_DESCRIPTION = "The weather in a city"
TOOL_PARAMETERS = {"type": "object", "properties": {"location": {"type": "string"}}}

passed = 0


def require(sdk):
    """Imports the SDK module `sdk`, or says how to install it and exits with status 2."""
    try:
        return importlib.import_module(sdk)
    except ImportError:
        print(f"the `{sdk}` Python SDK is not installed: run `pip install {sdk}`", file=sys.stderr)
        sys.exit(2)


def models():
    """TOLLGATE_MODELS: model=answer pairs, comma-separated."""
    return dict(pair.split("=", 1) for pair in os.environ["TOLLGATE_MODELS"].split(","))


def check(name):
    """Counts a check that passed and says so."""
    global passed
    passed += 1
    print(f"ok: {name}", flush=True)
