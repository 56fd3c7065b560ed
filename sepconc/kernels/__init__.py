"""The block operations' kernels: each fused operation in its own file, with its plain
reference (stock PyTorch ops, autograd), and the one function that chooses between them.

Files:
    choose.py            `choose_kernels`: the ONE place that decides which path runs
    layout.py            the channel-major layout (explained there) and its helpers
    common.py            helpers shared by the kernels (ReLU fold/mask, row statistics, blocks)
    phase_dense.py       dense phase scattering (`DenseRectified`)
    projection.py        standardization + 1x1 projection (`StandardizedProjection`)
    phase_projection.py  dense phase scattering + standardization + projection
                         (`DensePhaseStandardizedProjection`)
    frame.py             the tight frame `A`: its reference (two convolutions), the k = 1
                         fused form (`PointwiseReluFrame` for relu), the same on overlapping
                         patches (`patch_frame`) and the non-linearity `rho`
    patches.py           `k x k` patches at stride `s` as rows, their adjoint, patch counts

Notation (one meaning per letter, in every file here):
    B   batch size
    C   input channels of an operation (phase scattering: its input's channels)
    L   orientations of the wavelets
    K   phase-scattering channels per input channel, `K = 1 + 4L`:
        `[low, relu(Re), relu(Im), relu(-Re), relu(-Im)]` per orientation
    1 + 2L  linear channels per input channel (`[low, Re_0, Im_0, Re_1, ...]`, before the
        rectification); named `lin` in code, never by a single letter
    n   input side (images are `n x n`); `h = n // 2` the phase scattering's output side,
        `m = h * h` its positions per image
    N   positions (rows) an operation reduces over: `B m` or `B n^2`
    O   output channels of the projection `P`
    D   the dense phase-scattering matrix `(n^2, (1 + 2L) m)`
    P   the projection's weight as a matrix `(O, C K)` (or `(O, C)`); `F` / `w` a frame's
        atoms `(width, C)`

Nothing here imports the model or the layers: `sepconc.layers`, `sepconc.scattering` and
`sepconc.model` build modules from these functions.
"""
