"""`sam build` (no container) builds every function and a layer that is right for Lambda, not for this host."""

from __future__ import annotations

import re
import struct
import tomllib
from pathlib import Path
from typing import Any

from tests.template.samshell import ALL_FUNCTIONS, ROOT

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not a Linux ELF object"
    assert header[4] == 2, f"{path} is not 64-bit"
    return int(struct.unpack_from("<H", header, 18)[0])


def test_build_writes_every_function_and_the_layer(sam_build: Path) -> None:
    assert (sam_build / "template.yaml").is_file()
    sources = {p.name for p in (ROOT / "functions" / "research_agent").iterdir() if p.name != "__pycache__"}
    for fn in ALL_FUNCTIONS:
        assert sources <= {p.name for p in (sam_build / fn).iterdir()}, fn


def test_layer_holds_the_framework_and_its_runtime_dependencies(sam_build: Path) -> None:
    python = sam_build / "StepchainLayer" / "python"
    assert (python / "stepchain" / "__init__.py").is_file()
    assert (python / "stepchain" / "py.typed").is_file()
    assert (python / "aws_lambda_powertools").is_dir()
    assert (python / "pydantic").is_dir()
    assert (python / "pydantic_core").is_dir()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (python / f"stepchain-{version}.dist-info").is_dir()
    # the runtime ships boto3/botocore; the layer must not shadow them, nor carry build-host scripts
    for absent in ("boto3", "botocore", "s3transfer", "bin"):
        assert not (python / absent).exists(), absent


def test_pydantic_core_is_the_linux_wheel_for_the_function_architecture(
    sam_build: Path, template: dict[str, Any]
) -> None:
    arch = template["Globals"]["Function"]["Architectures"][0]
    libs = list((sam_build / "StepchainLayer" / "python" / "pydantic_core").glob("_pydantic_core*.so"))
    assert len(libs) == 1, libs
    wheel_arch = {"x86_64": "x86_64", "arm64": "aarch64"}[arch]
    assert re.fullmatch(rf"_pydantic_core\.cpython-312-{wheel_arch}-linux-gnu\.so", libs[0].name), libs[0].name
    assert elf_machine(libs[0]) == ELF_MACHINE[arch]
