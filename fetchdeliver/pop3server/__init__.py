"""The POP3 server (RFC 1939 with CAPA, STLS, SASL AUTH, RESP-CODES) over the one mail store."""
