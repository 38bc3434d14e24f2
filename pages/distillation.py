"""Distillation page (being built)."""
import streamlit as st

from pages._common import sidebar

sidebar()
st.title("Distillation")
st.info("This page is being built.")
