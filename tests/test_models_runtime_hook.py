"""The model loaders reach the runtimes (one layer above them) through the registration hook of
desra_fast.models.runtimes, in a fresh interpreter where nothing imported desra_fast.runtime."""
import subprocess
import sys
import textwrap


def test_loaders_find_the_runtimes_without_importing_them():
    code = textwrap.dedent("""
        import sys
        from desra_fast.models import load_sr
        assert "desra_fast.runtime" not in sys.modules, "the models layer imported the runtime layer"
        from desra_fast.models.runtimes import support
        s = support()
        import desra_fast.runtime as rt
        assert s.prepare_model is rt.prepare_model and s.source_kind is rt.source_kind
        assert s.runtimes == rt.RUNTIMES and s.source_kind("m.onnx") == "onnx"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
