"""The worker's consumer: Celery's own, without native delayed delivery.

With quorum queues Celery 5.5+ adds a `DelayedDelivery` bootstep that declares 28 `celery_delayed_*`
exchanges and quorum queues (in every vhost it connects to, with no prefix, on each node of the failover
list) so that ETA/countdown tasks can wait in the broker. It works only for queues on topic or fanout
exchanges: ours are on a direct exchange (gateway/aiocelery publishes to the default exchange),
so it binds nothing, logs one warning per queue at every start, and leaves 28 replicated queues that
never hold a message (84 Raft members on a 3-node cluster). checkgate publishes no ETA or countdown
tasks; should one appear, Celery holds it in the worker, as it does on classic queues.
"""

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    """Celery's consumer with every default step but native delayed delivery (`worker_consumer`)."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = tuple(s for s in CeleryConsumer.Blueprint.default_steps if s != DELAYED_DELIVERY_STEP)
