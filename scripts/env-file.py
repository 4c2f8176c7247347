#!/usr/bin/env python3
"""Writes packaging/chatd.default from `chatd --help`: every option as a commented CHATD_*
variable with its help and default, so the service's settings file names them all.
usage: scripts/env-file.py build/src/app/chatd > packaging/chatd.default"""
import re
import subprocess
import sys

help_text = subprocess.run([sys.argv[1], '--help'], check=True, capture_output=True, text=True).stdout
print("""# Settings for the chatd service: every `chatd --help` option as a CHATD_* variable
# (--max-frame-bytes is CHATD_MAX_FRAME_BYTES), commented out at its default. Uncomment and
# change what you need, then restart the service:
#   systemctl restart chatd
# (Written by scripts/env-file.py from `chatd --help`.)""")
for line in help_text.splitlines():
    m = re.match(r'^  --([a-z0-9-]+) <v>\s+(.*) \[(.*)\]$', line)
    if not m:
        continue
    name, text, default = m.groups()
    if name == 'data-dir':
        default = '/var/lib/chatd'  # what the unit sets (its StateDirectory)
    elif name == 'web-root':
        default = ''  # found next to the installed binary (share/chatd/web)
    elif default in ('(generated)',):
        default = ''
    print(f'\n# {text}')
    print(f'#CHATD_{name.upper().replace("-", "_")}={default}')
