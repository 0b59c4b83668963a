"""Tests of nas_jax.runtime: when and how entry points restart with huge pages."""
import os
import subprocess
import sys
import textwrap

import pytest

from nas_jax import runtime

GLIBC = (2, 36)


@pytest.mark.parametrize("text, mode", [
    ("always [madvise] never\n", "madvise"),
    ("[always] madvise never\n", "always"),
    ("always madvise [never]\n", "never"),
    ("garbled\n", None),
])
def test_thp_mode_reads_the_bracketed_mode(tmp_path, text, mode):
  path = tmp_path / "enabled"
  path.write_text(text)
  assert runtime.thp_mode(str(path)) == mode


def test_thp_mode_of_a_missing_file_is_none(tmp_path):
  assert runtime.thp_mode(str(tmp_path / "nope")) is None


def test_env_gets_the_tunable_only_where_it_helps():
  env = {"PATH": "/bin"}
  new = runtime.huge_pages_env(env, mode="madvise", glibc=GLIBC)
  assert new == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert env == {"PATH": "/bin"}  # the caller's dict is left alone
  # Other tunables are kept.
  new = runtime.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, mode="madvise", glibc=GLIBC)
  assert new["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  # No restart: opted out, already set (no second restart), THP always/never/unknown, no or old glibc.
  assert runtime.huge_pages_env({"NAS_JAX_HUGE_PAGES": "0"}, mode="madvise", glibc=GLIBC) is None
  assert runtime.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, mode="madvise", glibc=GLIBC) is None
  for mode in ("always", "never", None):
    assert runtime.huge_pages_env({}, mode=mode, glibc=GLIBC) is None
  assert runtime.huge_pages_env({}, mode="madvise", glibc=None) is None
  assert runtime.huge_pages_env({}, mode="madvise", glibc=(2, 31)) is None


_SCRIPT = textwrap.dedent("""
    import os, sys
    print("start", sys.argv[1:], flush=True)
    from nas_jax import runtime
    runtime.thp_mode = lambda: "madvise"        # as on these machines, whatever the test machine says
    runtime.glibc_version = lambda: (2, 36)
    runtime.reexec_with_huge_pages()
    print("tunables", os.environ.get("GLIBC_TUNABLES"))
""")


def _run(tmp_path, **env):
  script = tmp_path / "entry.py"
  script.write_text(_SCRIPT)
  full_env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "NAS_JAX_HUGE_PAGES")}
  out = subprocess.run([sys.executable, str(script), "--flag", "a b"], env={**full_env, **env},
                       capture_output=True, text=True, timeout=60, check=True)
  return out.stdout.splitlines()


@pytest.mark.skipif(sys.platform != "linux", reason="execve restart is exercised on Linux")
def test_reexec_restarts_once_with_the_same_command_line(tmp_path):
  lines = _run(tmp_path)
  # Printed once by the first process (flushed before the exec) and once by the restarted one.
  assert lines == ["start ['--flag', 'a b']", "start ['--flag', 'a b']", "tunables glibc.malloc.hugetlb=1"]


@pytest.mark.skipif(sys.platform != "linux", reason="execve restart is exercised on Linux")
def test_reexec_can_be_turned_off(tmp_path):
  assert _run(tmp_path, NAS_JAX_HUGE_PAGES="0") == ["start ['--flag', 'a b']", "tunables None"]
