"""Model & data: the current model's summary, layer table and baseline metrics."""
import streamlit as st

from compression.figures.common import confusion_figure, layer_share_figure
from compression.metrics.summary import layer_table
from ui.errors import show_error
from ui.state import base_metrics, current_base, current_data
from ui.widgets import accuracy_label

st.title("Model & data")
with st.expander("What this page shows", expanded=False):
    st.write("The model you are about to compress and how it does before any compression: its layers "
             "(parameters and multiply-accumulates per layer) and its accuracy, size and measured latency "
             "on the scored samples (the test split of the digits; the whole file, or the part chosen in the data "
             "panel, for your own data). Every other page compares against these numbers.")

base, data = current_base(), current_data()
try:
    m = base_metrics()
except Exception as exc:
    show_error(exc, "Could not evaluate the model")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
c1.metric(accuracy_label(data), f"{m['accuracy']:.2%}", help=f"on the {m['split']} split, {m['n_samples']} samples")
c2.metric("Parameters", f"{m['params']:,}")
c3.metric("Size", f"{m['size_bytes'] / 1024:.1f} KiB", help=m["size_method"])
c4.metric("Latency", f"{m['latency_ms']:.2f} ms",
          help=f"median of repeated runs after warm-up, batch {m['batch_size']}, {m['threads']} threads "
               f"(IQR {m['latency_iqr_ms']:.3f} ms)")
table = layer_table(base.model, data.test.X[:1])
st.caption(f"Loss {m['loss']:.4f} · top-5 {m['top5'] or 0:.2%} · MACs per sample {table.attrs['total_macs']:,} · "
           f"fp32 weights {m['fp32_bytes'] / 1024:.1f} KiB · data: {data.name}, "
           f"{', '.join(f'{k} {v}' for k, v in data.sizes().items())}")
st.subheader("Layers")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"macs": st.column_config.NumberColumn(
                                "MACs per sample", help="multiply-accumulates for one input sample; empty for "
                                "TorchScript, whose layers cannot be counted one by one (the total above can)"),
                            "params_share": st.column_config.ProgressColumn("share of params", format="percent"),
                            "macs_share": st.column_config.ProgressColumn("share of MACs", format="percent")})
left, right = st.columns(2)
left.plotly_chart(layer_share_figure(table, "params"), key="params_fig")
right.plotly_chart(confusion_figure(m["confusion"], data.class_names), key="confusion_fig")
