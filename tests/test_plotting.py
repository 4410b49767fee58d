"""The plot epilogue: a PNG on disk and no figure left open."""

from bench.views.plotting import plt, save


def test_save_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    path = save(fig, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)
