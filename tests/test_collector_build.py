"""ensure_built(): override, cache by manifest hash, one build under concurrency, clear errors.

These use a fake `go` and a fake builder (shell scripts), so they run in a second, not minutes;
the real build is exercised by every `collector`-marked test through `ensure_built()`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pideai_otel import collector
from pideai_otel.collector import BuildError, ensure_built

FAKE_GO = """\
#!/bin/sh
# Fake `go install .../builder@VERSION`: drops a fake builder into $GOBIN.
[ "$1" = install ] || exit 3
[ "$GOTOOLCHAIN" = local ] || { echo "GOTOOLCHAIN must be local" >&2; exit 4; }
cat > "$GOBIN/builder" <<'SCRIPT'
#!/bin/sh
# Fake builder: slow enough for concurrent callers to overlap; counts its runs.
echo "fake builder compiling $1"
sleep 1
echo run >> "$BUILD_COUNTER"
mkdir -p _build && printf '#!/bin/sh\\necho fake collector\\n' > _build/otelcol-pideai && chmod +x _build/otelcol-pideai
SCRIPT
chmod +x "$GOBIN/builder"
"""


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BUILD_COUNTER", str(tmp_path / "builds.txt"))
    monkeypatch.delenv("PIDEAI_OTELCOL_BIN", raising=False)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("dist:\n  name: otelcol-pideai\n  output_path: ./_build\n")
    return manifest


def test_builds_once_into_a_cache_keyed_by_the_manifest(fake_go: Path, tmp_path: Path) -> None:
    # Three processes at once, as parallel test workers would: one builds, the others wait.
    code = f"from pathlib import Path; from pideai_otel.collector import ensure_built; print(ensure_built(Path({str(fake_go)!r})))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    paths = {out.strip() for out, _ in results}
    stderr = "".join(err for _, err in results)
    print(stderr)
    assert all(proc.returncode == 0 for proc in procs), stderr
    assert len(paths) == 1
    binary = Path(paths.pop())
    digest = collector.manifest_hash(fake_go)
    assert binary == tmp_path / "cache" / "pideai-otel" / "collector" / digest[:16] / "otelcol-pideai"
    assert (tmp_path / "builds.txt").read_text().count("run") == 1
    # Progress is streamed: the builder's own lines reach stderr.
    assert "fake builder compiling" in stderr and "installing the collector builder v0.161.0" in stderr

    # Cached: no rebuild for the same manifest; a changed manifest builds again.
    assert ensure_built(fake_go) == binary
    fake_go.write_text(fake_go.read_text() + "# changed\n")
    assert ensure_built(fake_go) != binary
    assert (tmp_path / "builds.txt").read_text().count("run") == 2


def test_override_and_errors(fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "otelcol-contrib"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PIDEAI_OTELCOL_BIN", str(fake))
    assert ensure_built(fake_go) == fake

    monkeypatch.setenv("PIDEAI_OTELCOL_BIN", str(tmp_path / "missing"))
    with pytest.raises(BuildError, match="PIDEAI_OTELCOL_BIN=.*not an executable"):
        ensure_built(fake_go)

    monkeypatch.delenv("PIDEAI_OTELCOL_BIN")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(collector, "GO_FALLBACK", tmp_path / "no-go")
    with pytest.raises(BuildError, match=r"`go` not found on PATH; install Go"):
        ensure_built(fake_go)


def test_builder_failure_is_one_clear_line(fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = tmp_path / "bin" / "go"
    go.write_text(
        textwrap.dedent("""\
        #!/bin/sh
        cat > "$GOBIN/builder" <<'SCRIPT'
        #!/bin/sh
        echo "go: module example.com/nope@v9: not found" >&2
        exit 1
        SCRIPT
        chmod +x "$GOBIN/builder"
        """)
    )
    with pytest.raises(BuildError, match=r"the collector build failed \(exit 1\): .*not found"):
        ensure_built(fake_go)
    # Nothing half-built is left to be mistaken for a binary.
    assert not collector.cached_binary(fake_go).exists()
