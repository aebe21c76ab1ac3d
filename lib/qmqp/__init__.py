"""QMQP: the request format and its reading (qmqp), Postfix qmqpd's access policy for qmail-qmqpd
(qmqpd_policy), and qmail-qmqpc's list of servers (qmqpservers).
May import: util, config, rfc822, queue.
"""
