"""radixserve: a CPU LLM serving daemon built around a radix-tree prefix cache.

The C engine in engine_c/ is built as a cffi extension in API mode
(radixserve._engine) by engine_c/build_engine.py.
"""
from setuptools import find_packages, setup

setup(
    name="radixserve",
    version="0.1.0",
    description="CPU LLM serving with a radix-tree prefix cache over a paged KV store",
    packages=find_packages(include=["radixserve", "radixserve.*", "scheduler", "scheduler.*"]),
    python_requires=">=3.10",
    setup_requires=["cffi>=1.16"],
    cffi_modules=["engine_c/build_engine.py:ffibuilder"],
    install_requires=["cffi>=1.16", "numpy>=1.26", "tokenizers>=0.21", "jinja2>=3.1", "aiohttp>=3.9",
                      "prometheus-client>=0.20", "msgpack>=1.0", "uvloop>=0.19; sys_platform != 'win32'"],
    entry_points={"console_scripts": ["radixserve=radixserve.__main__:main"]},
)
