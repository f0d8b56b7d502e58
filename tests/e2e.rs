//! Real next hops (Postfix smtp-sink, a real Postfix, Dovecot LMTP) and
//! real clients (swaks); the corpora relayed byte-exact.
