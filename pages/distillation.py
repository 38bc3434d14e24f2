"""Distillation: train a small student to imitate a teacher's softened outputs, next to the same
student trained on the labels alone. Training runs as a background job with live curves."""
import streamlit as st

from compression.figures.analysis import curve_figure
from compression.metrics.summary import distillation_note
from compression.models import zoo
from compression.workflows.background import distill_work
from ui.cache import own_demo_model
from ui.errors import show_error
from ui.jobs import finished_result, job_panel, live_events, start_background
from ui.state import add_result, current_base, current_data, current_device, keep_as_working
from ui.widgets import intro, metric_delta

JOB = "kd_job"
CURRENT = "current"

st.title("Distillation")
intro("Knowledge distillation trains a small *student* on a large *teacher*'s output probabilities, "
      "softened by a temperature T, mixed with the true labels by α (α = 1: teacher only). The curves "
      "show validation accuracy and loss per epoch for the distilled student (solid) and the same "
      "student trained without the teacher (dotted); the metrics compare the two on the scored samples.")

data = current_data()
names = zoo.list_models()
c1, c2, c3 = st.columns(3)
teacher_name = c1.selectbox("Teacher", [CURRENT, *names], index=1 + names.index("teacher"), key="kd_teacher",
                            format_func=lambda n: f"current model ({current_base().name})" if n == CURRENT
                            else zoo.ZOO[n].title)
student_name = c2.selectbox("Student", names, index=names.index("student"), key="kd_student",
                            format_func=lambda n: zoo.ZOO[n].title)
init = c3.radio("Student starts", ["fresh", "pretrained"], key="kd_init", horizontal=True,
                help="fresh: random weights from zoo.build; pretrained: the bundled digits weights")
c1, c2, c3, c4 = st.columns(4)
temperature = c1.slider("Temperature T", 1.0, 10.0, 4.0, 0.5, key="kd_temperature",
                        help="higher T = softer teacher probabilities, more 'dark knowledge'")
alpha = c2.slider("α (weight of the teacher)", 0.0, 1.0, 0.9, 0.05, key="kd_alpha")
epochs = c3.number_input("Epochs", 1, 100, 5, key="kd_epochs")
lr = c4.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], 3e-3, key="kd_lr")
with_baseline = st.checkbox("Also train the student without the teacher (for comparison)", True,
                            key="kd_with_baseline")


def build_models():
    """(teacher, student) for this data set, or raise with a readable message."""
    shape = data.input_shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"the built-in students need square images; this data has samples of shape {shape}")
    teacher = current_base().model if teacher_name == CURRENT else own_demo_model(teacher_name)
    if init == "pretrained":
        return teacher, own_demo_model(student_name)
    return teacher, zoo.build(student_name, in_channels=shape[0], image_size=shape[1],
                              num_classes=data.num_classes)


if st.button("Train", key="kd_train", type="primary"):
    try:
        from compression.methods.distillation import DistillConfig

        cfg = DistillConfig(temperature=float(temperature), alpha=float(alpha), epochs=int(epochs),
                            lr=float(lr), batch_size=64, seed=0, hard_labels=False)
        teacher, student = build_models()
        previous = st.session_state.get(JOB)
        start_background(JOB, "Distillation",
                         distill_work(teacher, student, data, cfg, with_baseline, device=current_device()))
        if st.session_state.get(JOB) is not previous:  # started (not refused: one job at a time)
            st.session_state["kd_setup"] = {"teacher": teacher_name, "student": student_name, "init": init,
                                            "config": cfg.to_dict() if hasattr(cfg, "to_dict") else vars(cfg)}
    except Exception as exc:
        show_error(exc, "Could not start distillation")

job = job_panel(JOB, "Distillation")


def draw_curves(events: list) -> None:
    if not events:
        st.caption("Curves appear after the first epoch.")
        return
    left, right = st.columns(2)
    left.plotly_chart(curve_figure(events, "val_accuracy", "Validation accuracy per epoch"), key="kd_acc_fig")
    right.plotly_chart(curve_figure(events, "val_loss", "Validation loss per epoch"), key="kd_loss_fig")


live_events(JOB, draw_curves)
result = finished_result(JOB)
if result and result.get("distilled"):
    setup = st.session_state.get("kd_setup", {})
    distilled, baseline, teacher_m = result["distilled"], result.get("baseline"), result.get("teacher")
    dm, bm = distilled["metrics"], baseline["metrics"] if baseline else None
    tm = teacher_m or {}
    st.subheader(f"Result on the {data.eval_split} split ({len(data.scored)} samples)")
    c1, c2, c3, c4 = st.columns(4)
    metric_delta(c1, "Distilled student accuracy", dm["accuracy"], bm["accuracy"] if bm else None,
                 help="delta: against the same student trained without the teacher")
    metric_delta(c2, "Student without teacher", bm["accuracy"] if bm else None, tm.get("accuracy"),
                 help="delta: against the teacher")
    metric_delta(c3, "Teacher accuracy", tm.get("accuracy"), None)
    metric_delta(c4, "Student size", dm["size_bytes"] / 1024, tm["size_bytes"] / 1024 if tm else None,
                 pct=False, fmt="{:.1f}", unit=" KiB", inverse=True, help="delta: against the teacher")
    hint = distillation_note(dm["accuracy"], bm["accuracy"] if bm else None,
                             int(setup.get("config", {}).get("epochs", 0)))
    if hint:
        st.warning(hint)
    if dm.get("agreement") is not None:
        st.caption(f"The distilled student agrees with the teacher on {dm['agreement']:.1%} of test samples"
                   + (f" (without the teacher: {bm['agreement']:.1%})." if bm and bm.get("agreement") is not None
                      else "."))
    label = (f"distilled {setup.get('student', '?')} (T={setup.get('config', {}).get('temperature')}, "
             f"α={setup.get('config', {}).get('alpha')}) #{int(job.started) % 100000}")
    config = {"kind": "distill", **setup.get("config", {}), "teacher": setup.get("teacher"),
              "student": setup.get("student"), "init": setup.get("init")}
    if st.session_state.get("kd_recorded") != job.started:
        st.session_state["kd_recorded"] = job.started
        if bm:
            add_result(f"{setup.get('student', '?')} without teacher #{int(job.started) % 100000}",
                       {**config, "baseline": True}, bm, record=True)
        add_result(label, config, dm, record=True)  # a training run started on purpose: recorded
    if st.button("Keep the distilled student as the working model", key="kd_keep"):
        keep_as_working(distilled["model"], label)
        st.success(f"Kept: {label}. The other pages now start from this student.")
elif job is not None and job.done and job.error is None:
    st.info("Stopped before the first run finished: nothing to compare yet.")
