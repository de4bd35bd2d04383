"""The YoWASP tools' one-time WebAssembly compile (fpga/_toolchain.py): announced, and done once under a lock."""

from concurrent.futures import ThreadPoolExecutor

from fpga._toolchain import SilentListener, needs_compile, prepare_tool


def test_first_compile_happens_once_under_a_lock(tmp_path, monkeypatch):
    # two first runs at once (a --jobs 2 sweep): one compiles and announces it, the other waits for the cached file
    # (yowasp_runtime rewrites the file in place, which killed a concurrent reader with SIGBUS; fpga/_toolchain.py)
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    notes = []

    class Notes(SilentListener):
        def note(self, text):
            notes.append(text)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: prepare_tool("ecppack", Notes()), range(2)))
    assert len(notes) == 1 and "compiling its WebAssembly" in notes[0]
    assert not needs_compile("ecppack")
    prepare_tool("ecppack", Notes())  # cached: nothing to announce
    assert len(notes) == 1
