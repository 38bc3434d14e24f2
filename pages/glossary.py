"""Glossary: every term the app uses, in plain words, alphabetic, with a filter. A help tooltip's link
opens this page filtered on its term (?term=...)."""
import streamlit as st

import ui  # noqa: F401  (every page imports it: it ends Streamlit's pages-folder mode)
from compression.core.glossary import GLOSSARY, search

st.title("Glossary")
st.write("The words the pages use, each in a sentence or two. Type to filter by term or by any word of its "
         "explanation.")
if "glossary_filter" not in st.session_state:   # first visit: a help tooltip's link may name a term
    st.session_state["glossary_filter"] = st.query_params.get("term", "")
text = st.text_input("Filter", key="glossary_filter", placeholder="e.g. SQNR, pruning, bits")
found = search(text)
st.caption(f"{len(found)} of {len(GLOSSARY)} terms")
if not found:
    st.info(f"No term or explanation mentions {text!r}.")
for term, meaning in found:
    st.markdown(f"**{term}**: {meaning}")
