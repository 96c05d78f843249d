import streamlit as st

from shelfproof.console import session
from shelfproof.console.people import PEOPLE, WrongPassphrase, key_file, unlock_key_file

st.title("shelfproof console")
st.caption("Log in with your name and the passphrase of your ledger key. Your key is unlocked for this session only.")
with st.form("login", clear_on_submit=True):  # the passphrase does not stay in the session
    login = st.text_input("Login", key="login_name").strip().lower()
    passphrase = st.text_input("Passphrase", type="password", key="login_passphrase")
    submitted = st.form_submit_button("Log in")
if submitted:
    person = PEOPLE.get(login)
    if person is None:
        st.error("There is no person with that login. Check the spelling, or ask an administrator to add you.")
    else:
        try:
            key = unlock_key_file(key_file(session.state_dir(), login), passphrase, person.agent_id)
        except WrongPassphrase as err:
            st.error(f"Could not log in: {err}. Try again.")
        else:
            st.session_state[session.PERSON] = login
            st.session_state[session.KEY] = key
            st.rerun()
