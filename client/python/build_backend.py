"""A PEP 517 build backend for the twotower client that needs only the standard library.

pip builds packages in an isolated environment whose build requirements it downloads;
offline, with setuptools only as a Debian package, that fails. This backend requires
nothing: it writes the wheel itself, with the hand-written modules under twotower/client,
client/service_config.json, and the twotower/v1 message and stub modules it generates from
the repository's proto/ with protoc and grpc_python_plugin.

Also a command, which the CMake target python_client runs to generate the modules for use
in place (``<build>/python`` on PYTHONPATH):

    python3 build_backend.py generate OUT_DIR [--protoc PATH] [--plugin PATH]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent.parent / "proto"
SERVICE_CONFIG = HERE.parent / "service_config.json"
PROTOS = ["features", "retrieval", "admin", "config", "bundle"]


def _metadata() -> dict:
    import tomllib  # Python 3.11; the build runs on Debian 12's python3

    with open(HERE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def generate(out_dir: Path, protoc: str | None = None, plugin: str | None = None) -> list[Path]:
    """Writes twotower/v1/*_pb2.py and *_pb2_grpc.py under out_dir; the files written."""
    protoc = protoc or shutil.which("protoc")
    plugin = plugin or shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise RuntimeError("needs protoc and grpc_python_plugin on PATH "
                           "(Debian: protobuf-compiler protobuf-compiler-grpc)")
    if not (PROTO_DIR / "twotower" / "v1" / "retrieval.proto").is_file():
        raise RuntimeError(f"no protos at {PROTO_DIR}: build from the repository's client/python")
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([protoc, f"--proto_path={PROTO_DIR}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}", f"--plugin=protoc-gen-grpc_python={plugin}"]
                   + [f"twotower/v1/{name}.proto" for name in PROTOS], check=True)
    return sorted((out_dir / "twotower" / "v1").glob("*.py"))


def _wheel_files(generated_root: Path) -> dict[str, bytes]:
    """Archive name -> contents of every installed file."""
    files: dict[str, bytes] = {}
    for path in sorted((HERE / "twotower" / "client").glob("*.py")):
        files[f"twotower/client/{path.name}"] = path.read_bytes()
    files["twotower/client/service_config.json"] = SERVICE_CONFIG.read_bytes()
    for path in generate(generated_root):
        files[f"twotower/v1/{path.name}"] = path.read_bytes()
    return files


def _dist_info(project: dict) -> tuple[str, dict[str, bytes]]:
    name = project["name"].replace("-", "_")
    dist_info = f"{name}-{project['version']}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
                f"Summary: {project['description']}\n"
                f"Requires-Python: {project['requires-python']}\n")
    wheel = "Wheel-Version: 1.0\nGenerator: twotower build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    scripts = "".join(f"{k} = {v}\n" for k, v in project.get("scripts", {}).items())
    return dist_info, {f"{dist_info}/METADATA": metadata.encode(), f"{dist_info}/WHEEL": wheel.encode(),
                       f"{dist_info}/entry_points.txt": f"[console_scripts]\n{scripts}".encode()}


def build_wheel(wheel_directory: str, config_settings: dict | None = None,
                metadata_directory: str | None = None) -> str:
    """PEP 517: writes the wheel into wheel_directory; its file name."""
    project = _metadata()
    with tempfile.TemporaryDirectory() as generated:
        files = _wheel_files(Path(generated))
    dist_info, info_files = _dist_info(project)
    files.update(info_files)
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel_name = f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return wheel_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generates the twotower/v1 Python modules.")
    parser.add_argument("command", choices=["generate"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--protoc", default=None)
    parser.add_argument("--plugin", default=None)
    args = parser.parse_args(argv)
    try:
        generate(args.out_dir, args.protoc, args.plugin)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
