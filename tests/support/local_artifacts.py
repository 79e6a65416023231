"""Test data standing in for the Anaconda installer and docker-compose, served over HTTP from the host.

The local VM's recipe downloads them through its `artifactMirrorUrl` setting, by their real file
names, and verifies the checksums this module computes, exactly as it verifies the real ones.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner.local.twin import HOST_ADDRESS
from tests.support.serving import serving

COMPOSE = b"""#!/bin/sh
# Test fixture standing in for docker-compose v2.6.1 (the course-vm end-to-end test serves it).
echo "Docker Compose version v2.6.1 (course-vm test fixture)"
"""

ANACONDA = rb"""#!/bin/bash
# Test fixture standing in for the Anaconda installer: it takes the batch flags the recipe uses
# (-b -u -p PREFIX) and installs a conda stand-in that answers `conda --version` and, like the
# real one, adds itself to ~/.bashrc once on `conda init bash`.
set -eu
prefix=$HOME/anaconda3
while getopts bup: option; do [ "$option" = p ] && prefix=$OPTARG; done
mkdir -p "$prefix/bin"
cat >"$prefix/bin/conda" <<CONDA
#!/bin/bash
case "\$*" in
  --version) echo "conda 4.12.0" ;;
  "init bash")
    block='# >>> conda initialize >>>\nexport PATH="$prefix/bin:\$PATH"\n# <<< conda initialize <<<\n'
    grep -q '>>> conda initialize >>>' "\$HOME/.bashrc" 2>/dev/null || printf "\$block" >>"\$HOME/.bashrc" ;;
  *) echo "conda stand-in: \$*" >&2; exit 2 ;;
esac
CONDA
chmod +x "$prefix/bin/conda"
echo "installed the conda stand-in into $prefix"
"""

FILES = {"Anaconda3-2022.05-Linux-x86_64.sh": ANACONDA, "docker-compose-linux-x86_64": COMPOSE}


@dataclass(frozen=True)
class Artifacts:
    port: int
    anaconda_sha256: str
    compose_sha256: str


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_artifacts(directory: Path) -> Iterator[Artifacts]:
    """Serve the fixtures from DIRECTORY on a free loopback port (the guest's 10.0.2.2)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in FILES.items():
        (directory / name).write_bytes(data)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory))
    )
    with serving(server) as port:
        yield Artifacts(
            port=port,
            anaconda_sha256=hashlib.sha256(ANACONDA).hexdigest(),
            compose_sha256=hashlib.sha256(COMPOSE).hexdigest(),
        )


def twin_settings(artifacts: Artifacts, registry: str, key_path: Path) -> list[str]:
    """The `--set KEY=VALUE` settings that send a twin's downloads to ARTIFACTS and its image pulls to the
    REGISTRY (`127.0.0.1:PORT`), both reached on the host's address as the guest sees it, with KEY_PATH's key."""
    return [
        f"artifactMirrorUrl=http://{HOST_ADDRESS}:{artifacts.port}",
        f"anacondaSha256={artifacts.anaconda_sha256}",
        f"dockerComposeSha256={artifacts.compose_sha256}",
        f"dockerRegistryMirror=http://{HOST_ADDRESS}:{registry.rsplit(':', 1)[1]}",
        f"sshKeyPath={key_path}",
    ]
