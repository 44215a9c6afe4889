"""Print the Python distributions in the virtualenv given as the first
argument, one line each: name, version and license as their metadata state
them.  debian/rules writes the list to
/usr/share/doc/sendgate/bundled-python-packages.txt, so that an administrator
can see what the package carries (and check it against security notices);
each distribution's own license file is in its .dist-info directory."""

import glob
import importlib.metadata
import os
import sys


def license_of(meta) -> str:
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and c != "License :: OSI Approved"]
    if classifiers:
        return ", ".join(classifiers)
    text = (meta.get("License") or "").strip()
    return text.splitlines()[0] if text else "(not stated)"


def main() -> None:
    site = glob.glob(os.path.join(sys.argv[1], "lib/python3*/site-packages"))
    dists = sorted(importlib.metadata.distributions(path=site), key=lambda d: d.metadata["Name"].lower())
    print("Python distributions bundled in /usr/lib/sendgate/venv (name, version, license):")
    for dist in dists:
        print(f"{dist.metadata['Name']} {dist.version}: {license_of(dist.metadata)}")


main()
