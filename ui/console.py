"""The shelfproof console: one st.navigation entry point, the menu built from the person's role."""

import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import PAGES_BY_ROLE

st.set_page_config(page_title="shelfproof console", page_icon=":material/verified:", layout="wide")

TITLES = {
    "today": ("Today", ":material/today:"), "scan": ("Scan", ":material/barcode_scanner:"),
    "stock": ("Stock", ":material/inventory_2:"), "drafts": ("Drafts and orders", ":material/approval:"),
    "products": ("Products and labels", ":material/label:"), "prices": ("Prices and promotions", ":material/sell:"),
    "authenticity": ("Authenticity", ":material/gpp_maybe:"), "ledger": ("Ledger", ":material/account_tree:"),
}

me = session.person()
if me is None:
    page = st.navigation([st.Page("pages/login.py", title="Log in", icon=":material/login:")])
else:
    page = st.navigation([
        st.Page(f"pages/{name}.py", title=TITLES[name][0], icon=TITLES[name][1], url_path=name, default=n == 0)
        for n, name in enumerate(PAGES_BY_ROLE[me.role])
    ])
    with st.sidebar:
        st.markdown(f"**{me.name}**  \n{me.role} · `{me.agent_id}`")
        if st.button("Log out", icon=":material/logout:"):
            session.log_out()
            st.rerun()
page.run()
