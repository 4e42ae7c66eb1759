"""The names the hosts publish their metrics under, shared by the fleet's scaling policies and the alarms.

The model hosts publish these to CloudWatch (the monitoring deploy in ``playbooks/``), once a
minute, with the dimension ``AutoScalingGroupName`` set to their group's name:

- ``GPUUtilization``: mean utilization of the host's GPUs, percent (0..100);
- ``QueuedRequests``: requests waiting in the model server's queue, where the runtime exposes one
  (vLLM: ``vllm:num_requests_waiting``; Ollama has no such counter).
"""

NAMESPACE = "llmkit/Fleet"
DIMENSION = "AutoScalingGroupName"
GPU_UTILIZATION = "GPUUtilization"
QUEUED_REQUESTS = "QueuedRequests"
# Runtimes whose servers expose a request queue the hosts can publish as QUEUED_REQUESTS.
RUNTIMES_WITH_QUEUE = frozenset({"vllm"})
