"""Answers ansible-inventory / ansible CLI calls for the inventory tests without paying Python's
and Ansible's start-up for each: imports Ansible once, then forks a child per request that runs
the real CLI entry point with the given arguments.

Protocol: one JSON request per line on stdin, {"program": "ansible-inventory", "args": [...]};
one JSON reply per line on stdout, {"status": N, "stdout": "...", "stderr": "..."}.
"""

import json
import os
import sys
import tempfile

from ansible.cli.adhoc import AdHocCLI
from ansible.cli.inventory import InventoryCLI

PROGRAMS = {"ansible-inventory": InventoryCLI, "ansible": AdHocCLI}
reply_channel = os.fdopen(os.dup(1), "w")


def run_child(program, args, out_path, err_path):
    out = os.open(out_path, os.O_WRONLY)
    err = os.open(err_path, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(err, 2)
    code = 0
    try:
        PROGRAMS[program].cli_executor([program] + args)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        code = 250
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


for line in sys.stdin:
    request = json.loads(line)
    with tempfile.NamedTemporaryFile() as out, tempfile.NamedTemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            run_child(request["program"], request["args"], out.name, err.name)
        _, status = os.waitpid(pid, 0)
        reply = {
            "status": os.waitstatus_to_exitcode(status),
            "stdout": open(out.name, encoding="utf-8", errors="replace").read(),
            "stderr": open(err.name, encoding="utf-8", errors="replace").read(),
        }
    reply_channel.write(json.dumps(reply) + "\n")
    reply_channel.flush()
