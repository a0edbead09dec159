/* The training entry points of noah._poca (train.c), registered by the module in poca.c. */
#ifndef NOAH_TRAIN_H
#define NOAH_TRAIN_H

PyObject *noah_train_tiles_shape(PyObject *self, PyObject *args);
PyObject *noah_train_forward(PyObject *self, PyObject *args);
PyObject *noah_train_backward(PyObject *self, PyObject *args);

#define NOAH_TRAIN_TILES_SHAPE_DOC                                                                \
    "train_tiles_shape(images, length, heads, ck, cv, head_split, kv_split) -> tuple\n\n"        \
    "Shape of the position-tiled features that train_forward writes and train_backward reads."
#define NOAH_TRAIN_FORWARD_DOC                                                                    \
    "train_forward(x, tiles, wk, wv, bv, stats, logits, heads, head_split, kv_split, threshold,\n" \
    "              keep_scale, seed, threads, key_scale) -> bool\n\n"                               \
    "NOAH logits for training. x: (images, length, channels) float32, any strides, in the\n"     \
    "head's channel layout; tiles: C-contiguous train_tiles_shape(...), written (the features\n"  \
    "position-tiled, for the backward); wk/wv: C-contiguous (heads*M, ck)/(heads*M, cv); bv:\n"    \
    "(heads*M,); stats: C-contiguous (2, images, heads, M), written: per image, block and class\n" \
    "the log2 softmax normaliser of key_scale*K and the block's pooled output; logits: (images,\n" \
    "M), written. threshold > 0 turns on dropout of the values (kept where hash >> 8 >=\n"          \
    "threshold, scaled by keep_scale; the hash of seed, image, block, class, position). Returns\n" \
    "whether every logit is finite."
#define NOAH_TRAIN_BACKWARD_DOC                                                                   \
    "train_backward(x, tiles, wk, wv, bv, stats, grad, dx, dwk, dwv, dbv, heads, head_split,\n"   \
    "               kv_split, threshold, keep_scale, seed, threads, key_scale, group) -> None\n\n" \
    "Gradients of the logits of train_forward (same x, tiles, weights, stats and dropout) for\n" \
    "grad = dloss/dlogits (images, M): dx (images, length, channels), any strides (None: not\n"  \
    "needed), dwk/dwv like wk/wv (None: not needed), dbv (heads*M,); all overwritten. The key\n"   \
    "bias gets no gradient (softmax ignores a per-class shift). group: 16-class panels per work\n" \
    "item (1..8); only speed depends on it."

#endif /* NOAH_TRAIN_H */
