"""What `make install` brings beyond pip: the quick profile's data (Fashion-MNIST) and the chromium that the
rehearsal's browser test drives. `python -m dwlt_utils.prerequisites` does nothing when both are there.

Where apt-get can be used (as root, or through passwordless sudo), both come from Debian's packages
(dataset-fashion-mnist, chromium). Otherwise Fashion-MNIST's four .gz files are downloaded from torchvision's
mirrors, each checked against torchvision's MD5, into `data.DOWNLOADED_FASHION_MNIST`; a file whose checksum
differs is never kept. When that fails too, the command ends with one sentence naming the Debian package and
the folder to put the files in.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from torchvision.datasets import FashionMNIST

from . import data
from .errors import MissingInputError
from .io import atomic_write

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
BROWSER_PACKAGE = "chromium"
BROWSER_COMMANDS = ("chromium", "chromium-browser")
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20


def fashion_mnist_present() -> bool:
    return all(data.fashion_mnist_copy(name) for name in data.FASHION_MNIST_NAMES)


def browser() -> str | None:
    """The chromium executable on PATH, under either of its Debian and Ubuntu names."""
    return next(filter(None, map(shutil.which, BROWSER_COMMANDS)), None)


def missing_packages() -> list[str]:
    missing = [] if fashion_mnist_present() else [FASHION_MNIST_PACKAGE]
    return missing + ([] if browser() else [BROWSER_PACKAGE])


def fashion_mnist_remedy(folder: Path = data.DOWNLOADED_FASHION_MNIST) -> str:
    """How to provide Fashion-MNIST by hand, as the end of a sentence."""
    names = ", ".join(gz for gz, _ in FashionMNIST.resources)
    return (
        f"install Debian's package {FASHION_MNIST_PACKAGE} (sudo apt-get install {FASHION_MNIST_PACKAGE}), "
        f"or put {names} from {FashionMNIST.mirrors[0]} in {folder}"
    )


def fashion_mnist_problem() -> str | None:
    """None when Fashion-MNIST is on this machine, else the sentence saying how to get it."""
    if fashion_mnist_present():
        return None
    return f"Fashion-MNIST, the quick profile's data, is missing: run `make install`, or {fashion_mnist_remedy()}."


def apt_prefix() -> list[str] | None:
    """What runs apt-get here: nothing before it as root, `sudo -n` with passwordless sudo, else None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def apt_install(prefix: list[str], packages: list[str]) -> None:
    """Install `packages` one by one, so that one the distribution lacks (Ubuntu has no `chromium` package)
    does not keep the other out; a failure is reported and left to the checks that follow."""
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    print(f"Installing {' '.join(packages)} with apt-get.", flush=True)
    subprocess.run([*apt, "update"])  # a brand-new machine has no package lists
    for package in packages:
        if subprocess.run([*apt, "install", "-y", package]).returncode != 0:
            print(f"apt-get could not install {package}.", file=sys.stderr, flush=True)


def download_fashion_mnist(
    folder: Path = data.DOWNLOADED_FASHION_MNIST,
    mirrors: list[str] = FashionMNIST.mirrors,
    resources: list[tuple[str, str]] = FashionMNIST.resources,
) -> None:
    """Download each (file name, MD5) of `resources` that `folder` lacks from the first of `mirrors` that
    serves it with that MD5; raise MissingInputError with one sentence when no mirror does."""
    for name, md5 in resources:
        if (folder / name).is_file():
            continue
        problems = [problem for mirror in mirrors if (problem := _fetch(mirror + name, folder / name, md5))]
        if len(problems) == len(mirrors):
            raise MissingInputError(
                f"Fashion-MNIST could not be downloaded ({'; '.join(problems)}): {fashion_mnist_remedy(folder)}."
            )


def _fetch(url: str, target: Path, md5: str) -> str | None:
    """Download `url` to `target` when its MD5 is `md5`; else keep nothing and say what went wrong."""
    print(f"Downloading {url}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            atomic_write(target, lambda out: _copy_checked(response, out, md5), "wb")
    # No host, a timeout, an HTTP error, a cut connection or a checksum mismatch (ValueError); atomic_write has
    # removed its temporary file.
    except (OSError, http.client.HTTPException, ValueError) as err:
        return f"{url}: {getattr(err, 'reason', err)}"
    return None


def _copy_checked(response, out, md5: str) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := response.read(CHUNK_BYTES):
        digest.update(chunk)
        out.write(chunk)
    if digest.hexdigest() != md5:
        raise ValueError(f"its MD5 is {digest.hexdigest()}, not torchvision's {md5}")


def main() -> int:
    missing = missing_packages()
    prefix = apt_prefix()
    if missing and prefix is not None:
        apt_install(prefix, missing)
    if not fashion_mnist_present():
        try:
            download_fashion_mnist()
        except MissingInputError as err:
            print(err, file=sys.stderr)
            return 1
    if not browser():
        print(
            f"{BROWSER_PACKAGE} is not installed, and the rehearsal's browser test (make rehearsal) needs it: "
            f"sudo apt-get install {BROWSER_PACKAGE}.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
