"""The seed example (transfer_cache_async.md, 调用示例) as a PROMPT process.

The seed's lines are kept verbatim; only its two ``...`` are filled in
(marked below), plus checks appended after its last line. One fix: the
seed's ``assert(len(decoder_addrs) = 2*num_layers)`` is a SyntaxError in
Python; it reads ``==`` here.
"""
# ruff: noqa: F403, F405, E402

# ---- filled in: the seed's first "..." --------------------------------------
import sys
from typing import Optional

from llm_datadist import *
from llm_helpers import DecoderPeer, free_port, pattern, write_bytes

_port = free_port()
datadist = LLMDataDist(LLMRole.PROMPT, 1)
_config = LLMConfig()
_config.device_id = 0
_config.listen_ip_info = f"127.0.0.1:{_port}"
datadist.init(_config.generate_options())
kv_cache_manager = datadist.kv_cache_manager
_desc = CacheDesc(80, [2, 16, 8, 8], DataType.DT_FLOAT16)  # 40 layers, batch 2
kv_cache = kv_cache_manager.allocate_cache(_desc)
for _t, _addr in enumerate(kv_cache.per_device_tensor_addrs[0]):
    write_bytes(_addr, pattern(_t, _desc.size))
_decoder = DecoderPeer(
    {
        "cluster_id": 2,
        "prompts": [[1, "127.0.0.1", _port]],
        "caches": [{"num_tensors": 80, "shape": [1, 16, 8, 8], "dtype": "DT_FLOAT16"}],
    }
)
assert _decoder.link[0] == int(LLMStatusCode.LLM_SUCCESS), _decoder.link
# ---- end of the first "..." -------------------------------------------------

# fmt: off

class LayerSynchronizerImpl(LayerSynchronizer):
    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool:
        # need control time for transfer layer here.
        return True
num_layers = 40
dst_cluster_id = 2
# need register decoder kv addr here.
decoder_addrs = _decoder.addrs()  # filled in: the seed's second "..."
assert(len(decoder_addrs) == 2*num_layers)
transfer_config = TransferConfig(dst_cluster_id, decoder_addrs, range(0, num_layers), 0)
cache_task = kv_cache_manager.transfer_cache_async(kv_cache, LayerSynchronizerImpl(), [transfer_config])
cache_task.synchronize()
cache_task.get_results()
# fmt: on

# ---- appended checks --------------------------------------------------------
_status = cache_task.synchronize()
_results = cache_task.get_results()
_slice = _desc.size // 2  # src_batch_index 0: the first batch slice of each tensor
_verdict = _decoder.request(
    cmd="verify", cache=0, expect=[[t, t, _desc.size, 0, _slice, 0] for t in range(80)]
)
_bye = _decoder.close()
datadist.finalize()
_ok = (
    _status == LLMStatusCode.LLM_SUCCESS
    and _results == [LLMStatusCode.LLM_SUCCESS]
    and _verdict["ok"]
    and _bye.get("finalized") is True
)
print(f"synchronize={_status} results={_results} verify={_verdict} bye={_bye}")
print("SEED OK" if _ok else "SEED FAILED")
sys.exit(0 if _ok else 1)
