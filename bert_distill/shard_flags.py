"""--num_shards and --shard_index: the flags of the stages that split their
input files among processes (cli.select_shard). A script imports this
module and adopts its flags as its own key flags:

  from bert_distill import shard_flags
  flags.adopt_module_key_flags(shard_flags)

so they are listed by the script's --helpshort. Only scripts import it: it
defines flags on import.
"""

from absl import flags

flags.DEFINE_integer("num_shards", 1,
                     "Split the input files among this many processes: this "
                     "one takes every num_shards-th file.")
flags.DEFINE_integer("shard_index", 0,
                     "Which of the --num_shards this process is (0-based).")
flags.register_multi_flags_validator(
    ["num_shards", "shard_index"],
    lambda f: f["num_shards"] >= 1 and 0 <= f["shard_index"] < f["num_shards"],
    "need --num_shards >= 1 and 0 <= --shard_index < --num_shards")
