"""`pyloxi get cluster`: what this node and its active-active peers agree on (pyloxi extension).

    pyloxi get cluster [-o json]     peers heard (age, live), Maglev table mismatches,
                                     endpoints whose probe views disagree
"""

from __future__ import annotations

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, reporting, settings_of
from pyloxi.cli.groups import get_app
from pyloxi.model.cluster import ClusterStatus

CLUSTER_PATH = "/cluster/status"
PEER_COLUMNS = ("Peer", "Last Seen", "Live")
MISMATCH_COLUMNS = ("Service", "Peer", "Local Table", "Peer Table")
PROBE_COLUMNS = ("Endpoint", "Effective", "Views")


@get_app.command("cluster")
def get_cluster(ctx: typer.Context) -> None:
    """Show the cluster peers heard, Maglev table mismatches and probe disagreements."""
    settings = settings_of(ctx)
    with reporting(), client_for(ctx) as client:
        data = client.get(CLUSTER_PATH)
        if settings.json:
            render.print_json(data)
            return
        st = render.parse_answer(ClusterStatus, data)
    typer.echo(f"node {st.self_index}: {len([p for p in st.peers if p.live])} live peer(s), "
               f"{len(st.mismatches)} maglev mismatch(es) now ({st.mismatch_count} seen), "
               f"{len(st.disagreements)} probe disagreement(s) "
               f"({st.overrides} local verdicts overruled)")
    if st.peers:
        render.print_table(PEER_COLUMNS, [[p.index, f"{p.last_seen:.1f}s",
                                           "yes" if p.live else "no"] for p in st.peers])
    if st.mismatches:
        render.print_table(MISMATCH_COLUMNS, [[m.service, m.peer, m.local, m.remote]
                                              for m in st.mismatches])
    if st.disagreements:
        render.print_table(PROBE_COLUMNS, [
            [d.endpoint, d.effective, " ".join(f"{v.node}:{v.state}" for v in d.views)]
            for d in st.disagreements])
