"""Cross-tokenizer KD: distilling a teacher into a student whose tokenizer differs (`train.xtok` with objective kd
or kd_online; config.XtokOptions holds the options).

The student learns the completion text in its own tokens (CE), and the KD term compares the two sides where they
describe the same bytes: the completion is cut into byte-span groups that both tokenizations start and end on,
and per group the student's distribution is matched to the teacher's by sorted probabilities (ULD/GOLD), on the
tokens the two vocabularies share (GOLD's exact term) and by the group's whole likelihood (ALM). The teacher's
side comes from its stored top-k (kd) or from its forward pass over its own tokens (kd_online).

Modules:
- align.py    byte-span groups between two tokenizations of one text (`align`);
- vocab.py    the tokens the two vocabularies share (`shared_tokens`, `stop_ids`);
- collate.py  batches: the student's rows plus every row's groups and the teacher's side of them
              (`XtokCollator`, `teacher_groups`, `online_teacher`);
- data.py     curated shards -> the token cache's rows for both sides (a converter of train/data.py);
- loss.py     the math: sorted L1, exact-token and ALM terms, on full logits or chunked through the head;
- inspect.py  `r1distill xtok-inspect`: a tokenizer pair as this KD sees it, before a run.

Nothing is re-exported here: import a name from the module that holds it.
"""
