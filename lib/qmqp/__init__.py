"""QMQP: the request format and its reading (qmqp), Postfix qmqpd's access policy for qmail-qmqpd
(qmqpd_policy), qmail-qmqpc's list of servers (qmqpservers) and its memory of failed hubs
(hubmemory).
May import: util, config, rfc822, queue.
"""
