"""The reading side: everything here is derived from run records alone and can be rebuilt at any time.

    leaderboard.py the query layer: records -> sections, rows and cells (the paper's layout)
    paper.py       the paper's Table 6 (paper_table6.json) and when a run is in its configuration
    stats.py       means, standard deviations, paired t-intervals; compare.py paired comparisons by seed
    render.py      markdown / csv / json; plots.py figures; cli.py the leaderboard, compare and plot commands

Nothing here imports ``ssl_bench.run`` (tests/test_structure.py checks it).
"""
