# Rewrites a .cu file (or a .cuh header) into host C++ for the CPU emulation of CUDA (emu.h is force-included):
# kernel launches `k<<<grid, block, smem, stream>>>(args);` become emu::Launch(...).run(...) with
# the arguments captured by value (the launch runs later: at a synchronisation point, or on each
# replay of a captured graph, with the arguments of its enqueueing), and `extern __shared__ T a[];`
# points at the block's dynamic shared memory. A launch must be a statement of its own (not inside
# a macro). Usage: preprocess.py FILE.cu > FILE.cpp
import re, sys

s = open(sys.argv[1]).read()
s = re.sub(r'extern __shared__ (\w+) (\w+)\[\];',
           r'\1* \2 = reinterpret_cast<\1*>(::emu::dyn_smem());', s)
launch = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\((.*?)\);', re.S)
s, n = launch.subn(lambda m: '::emu::Launch(%s).run(reinterpret_cast<const void*>(&%s), "%s", [=] { %s(%s); });' % (
    m.group(2), m.group(1), m.group(1).replace('"', ''), m.group(1), m.group(3)), s)
if '<<<' in s:
    sys.exit('%s: a kernel launch the emulation cannot rewrite (inside a macro?)' % sys.argv[1])
sys.stdout.write(s)
