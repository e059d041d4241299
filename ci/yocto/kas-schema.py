#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Each kas file against the schema of the kas release in this venv, and
every repository it fetches pinned by a full commit.

    kas-schema.py KAS_FILE...
"""
import re
import sys

import jsonschema
import yaml
from kas.configschema import CONFIGSCHEMA

if len(sys.argv) < 2:
    sys.exit(__doc__)
for path in sys.argv[1:]:
    cfg = yaml.safe_load(open(path))
    try:
        jsonschema.validate(cfg, CONFIGSCHEMA)
    except jsonschema.ValidationError as e:
        sys.exit(f"{path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    remote = {name: repo for name, repo in (cfg.get("repos") or {}).items() if repo and repo.get("url")}
    unpinned = [name for name, repo in remote.items()
                if not re.fullmatch(r"[0-9a-f]{40}", repo.get("commit", ""))]
    if unpinned:
        sys.exit(f"{path}: not pinned by a full commit: {', '.join(unpinned)}")
    print(f"{path}: valid kas configuration (format {cfg['header']['version']}), "
          f"{len(remote)} repositories pinned")
