"""Build step of renkei's package: compile the gettext catalogues (.po -> .mo).

Metadata, dependencies and package data are in setup.cfg; this file only adds the command
`build_mo`, run as the last sub-command of `build`:

- a wheel (`pip install .`, `pip wheel .`): each .mo is written into the build directory beside
  the package's other files, so it is in the wheel and never in the source tree;
- an editable install (`pip install -e .`): the packages are imported from the source tree, so
  the .mo is written there, beside its .po (ignored by git).

The .po files are the only tracked source; nothing compiles them at run time. After editing a
.po in an editable checkout, run `pip install -e .` again.
"""
from __future__ import annotations

import os
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build as _build

ROOT = Path(__file__).resolve().parent
# Message catalogues: catalog's pages (Flask-Babel) and pygeoapi's HTML templates (ogcapi).
CATALOGUES = ("catalog/translations/*/LC_MESSAGES/*.po", "ogcapi/locale/*/LC_MESSAGES/*.po")


class build_mo(Command):
    description = "compile the gettext catalogues (.po) into .mo files"
    user_options = []  # noqa: RUF012 (distutils' own type)

    def initialize_options(self):
        self.build_lib = None
        self.editable_mode = False  # set by setuptools' editable_wheel

    def finalize_options(self):
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def _catalogues(self):
        """(source .po, .mo path relative to the project root) for every catalogue."""
        for pattern in CATALOGUES:
            for po in sorted(ROOT.glob(pattern)):
                yield po, po.relative_to(ROOT).with_suffix(".mo")

    def run(self):
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po
        from setuptools.errors import SetupError

        for po, rel in self._catalogues():
            locale = po.parent.parent.name
            with open(po, "rb") as fh:
                catalog = read_po(fh, locale=locale)
            problems = [f"{po.relative_to(ROOT)}:{msg.lineno}: {err}"
                        for msg, errors in catalog.check() for err in errors]
            if problems:
                raise SetupError("bad translations:\n" + "\n".join(problems))
            target = (ROOT if self.editable_mode else Path(self.build_lib)) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as fh:
                write_mo(fh, catalog)
            os.replace(partial, target)  # a running editable checkout never reads half a file
            print(f"compiled {po.relative_to(ROOT)} -> {target}")

    # What editable_wheel asks every build sub-command (its "strict" mode links these).
    def get_outputs(self):
        return [str(Path(self.build_lib) / rel) for _, rel in self._catalogues()]

    def get_output_mapping(self):
        return {str(Path(self.build_lib) / rel): str(ROOT / rel) for _, rel in self._catalogues()}


class build(_build):
    # Last: the .mo files join what build_py copied (the .mo are not package data: a stale one
    # left in the source tree by an editable install never reaches a wheel).
    sub_commands = _build.sub_commands + [("build_mo", None)]


setup(cmdclass={"build": build, "build_mo": build_mo})
