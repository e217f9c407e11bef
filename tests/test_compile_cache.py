"""The console programs' persistent compilation cache (cropjax.compile_cache)."""

import ast
import os
import subprocess
import sys
import textwrap

import pytest

from cropjax import compile_cache

# A program compiled in a fresh process, with the cache in the folder given: prints the folder,
# the result, the programs the cache holds after it and how many were read from it.
_RUN = textwrap.dedent('''
    import os, sys
    from cropjax import compile_cache
    folder = compile_cache.enable(sys.argv[1], min_compile_secs=0)
    import jax, jax.monitoring, jax.numpy as jnp
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event.endswith('/cache_hits') else None)
    out = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)(jnp.arange(12.0).reshape(3, 4))
    print(folder)
    print(repr(out.tolist()))
    print(sorted(f for f in os.listdir(folder) if f.endswith('-cache')))
    print(len(hits))
''')


def _run(root, **env):
  environ = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  environ.pop(compile_cache.ENV, None)
  environ.update(env)
  done = subprocess.run([sys.executable, '-c', _RUN, str(root)], env=environ, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.strip().splitlines()[-4:]


def test_a_second_run_reads_the_program_back_from_a_folder_per_machine(tmp_path):
  folder, first, cached, hits = _run(tmp_path)
  assert folder == str(tmp_path / compile_cache.machine_key())
  assert cached != '[]' and hits == '0', 'the compiled program was not written'
  assert (os.stat(folder).st_mode & 0o777) == 0o700  # JAX trusts what it reads there
  again = _run(tmp_path)
  # every program read back, none compiled anew: the same result
  assert again == [folder, first, cached, str(len(ast.literal_eval(cached)))]
  assert _run(tmp_path, CROPJAX_COMPILATION_CACHE='0')[0] == 'None'


def test_another_processor_gets_another_folder():
  amd = 'Linux\nx86_64\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2'
  intel = 'Linux\nx86_64\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 amx_tile'
  assert compile_cache.machine_key(amd) != compile_cache.machine_key(intel)
  assert compile_cache.machine_key(amd) == compile_cache.machine_key(amd)
  assert 'flags' in compile_cache.cpu_identity() or sys.platform != 'linux'


def test_off_by_environment_and_the_user_s_own_folder_kept(tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, '0')
  assert compile_cache.enable(tmp_path) is None
  assert not any(tmp_path.iterdir())
  monkeypatch.delenv(compile_cache.ENV)
  import jax
  mine = jax.config.jax_compilation_cache_dir  # the test session's own (conftest.py)
  assert mine
  assert compile_cache.enable(tmp_path) is None
  assert jax.config.jax_compilation_cache_dir == mine and not any(tmp_path.iterdir())


def test_the_default_folder_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compile_cache.default_root() == tmp_path / 'cropjax' / 'xla'
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / 'elsewhere'))
  assert compile_cache.default_root() == tmp_path / 'elsewhere'


@pytest.mark.parametrize('program, argv', [
    ('predict', ['a.jpg', 'b.jpg']),
    ('find', ['library']),
    ('evaluate', ['--workdir', 'w']),
])
def test_the_console_programs_turn_it_on_before_their_work(program, argv, monkeypatch):
  import importlib

  class Reached(Exception):
    pass

  def enable(*args, **kwargs):
    raise Reached
  monkeypatch.setattr(compile_cache, 'enable', enable)
  cli = importlib.import_module(f'cropjax.cli.{program}')
  with pytest.raises(Reached):
    cli.main(argv)
