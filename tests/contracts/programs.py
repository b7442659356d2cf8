"""What every command-line program must do: ``--help`` names the program and exits 0, an unknown option is a
usage error (exit 2) that names it, and (for programs that read or write files) paths with spaces and non-ASCII
letters work, as clinicians' folders have them ("Derm Fotos/Pätient 1").

A subclass sets ``prog`` (the console script's name) and ``main``; a :class:`FileProgramContract` subclass also
gives ``run_in(folder)``, a real run whose inputs and outputs all lie in ``folder``, asserting what it made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: A folder name of the kind the programs must accept: spaces, accents, a character outside Latin-1.
AWKWARD = "derm photos é ü \u2013 1"


class ProgramContract:
    """``--help`` and usage errors."""

    prog = ""
    main: Callable[..., object]

    def run(self, argv: list[str]) -> object:
        return type(self).main(argv)

    def test_help_names_the_program(self, capsys: pytest.CaptureFixture) -> None:
        with pytest.raises(SystemExit) as e:
            self.run(["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: {self.prog}")
        description = out.split("\n\n")[1]
        assert description.rstrip().endswith((".", "?")), f"the description stops mid-sentence: {description!r}"

    def test_an_unknown_option_is_a_usage_error(self, capsys: pytest.CaptureFixture) -> None:
        with pytest.raises(SystemExit) as e:
            self.run(["--no-such-option-xyz"])
        assert e.value.code == 2
        assert capsys.readouterr().err.startswith(f"usage: {self.prog}")


class FileProgramContract(ProgramContract):
    """A program that reads or writes files, run in a folder with an awkward name."""

    def run_in(self, folder: Path) -> None:
        raise NotImplementedError

    def test_paths_with_spaces_and_accents(self, tmp_path: Path) -> None:
        folder = tmp_path / AWKWARD
        folder.mkdir()
        self.run_in(folder)
