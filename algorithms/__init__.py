"""The built-in SSL algorithms, one file each, installed as the package ``ssl_bench_algorithms``.

Their names are reserved: ``ssl_bench.algorithm`` finds them through this package (no source tree needed)
and refuses a plug-in that registers one of them.
"""
