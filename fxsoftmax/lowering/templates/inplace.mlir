// The `inplace` executable; fxsoftmax.lowering.inplace fills in the placeholders. Each workgroup takes
// %per rows of x seen as [rows, n]; per row, a max pass over x, a pass writing z = exp(x - m) into the
// output while summing it (and prefetching the next row), and a pass scaling the output by 1/l in place.
stream.executable private @${name} {
  stream.executable.export public @${entry} workgroups(%rows: index, %per: index) -> (index, index, index) {
    %count = arith.ceildivui %rows, %per : index
    %c1 = arith.constant 1 : index
    stream.return %count, %c1, %c1 : index, index, index
  }
  builtin.module {
    func.func @${entry}(%in: !stream.binding, %out: !stream.binding, %rows: index, %per: index, %n: index) {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %lanes = arith.constant ${lanes} : index
      ${offsets}
      %lowest = arith.constant ${lowest} : f32
      %zero = arith.constant 0.0 : f32
      %zx = arith.constant 0.0 : ${x_et}
      %zy = arith.constant 0.0 : ${out_et}
      %one = arith.constant 1.0 : f32
      %tiny = arith.constant ${tiny} : f32
      %vlowest = vector.broadcast %lowest : f32 to ${vt}
      %vzero = vector.broadcast %zero : f32 to ${vt}
      %X = stream.binding.subspan %in[%c0] : !stream.binding -> ${mem_x}${dynamic}
      %Y = stream.binding.subspan %out[%c0] : !stream.binding -> ${mem_y}${dynamic}
      %wg = hal.interface.workgroup.id[0] : index
      %r0 = arith.muli %wg, %per : index
      %r1a = arith.addi %r0, %per : index
      %r1 = arith.minui %r1a, %rows : index
      %tail = arith.remui %n, %lanes : index
      %nv = arith.subi %n, %tail : index
      scf.for %r = %r0 to %r1 step %c1 {
        %vm = scf.for %j = %c0 to %nv step %lanes iter_args(%acc = %vlowest) -> (${vt}) {
          ${max_v}
          %a = ${max_op} %acc, ${max_v_f} : ${vt} ${tag1}
          scf.yield %a : ${vt}
        }
        %m0 = vector.reduction <maxnumf>, %vm : ${vt} into f32 ${tag1}
        %m = scf.for %j = %nv to %n step %c1 iter_args(%acc = %m0) -> (f32) {
          ${max_s}
          %a = ${max_op} %acc, ${max_s_f} : f32 ${tag1}
          scf.yield %a : f32
        }
        %vmb = vector.broadcast %m : f32 to ${vt}
        %next0 = arith.addi %r, %c1 : index
        %last = arith.subi %rows, %c1 : index
        %next = arith.minui %next0, %last : index
        %vs = scf.for %j = %c0 to %nv step %lanes iter_args(%acc = %vzero) -> (${vt}) {
          ${exp_v}
          %d = arith.subf ${exp_v_f}, %vmb : ${vt} ${tag2}
          ${prefetch}
          %z = math.exp %d : ${vt} ${tag2}
          ${store_z_v}
          %a = arith.addf %acc, %z : ${vt} ${tag3}
          scf.yield %a : ${vt}
        }
        %s0 = vector.reduction <add>, %vs : ${vt} into f32 ${tag3}
        %s = scf.for %j = %nv to %n step %c1 iter_args(%acc = %s0) -> (f32) {
          ${exp_s}
          %d = arith.subf ${exp_s_f}, %m : f32 ${tag2}
          %z = math.exp %d : f32 ${tag2}
          ${store_z_s}
          %a = arith.addf %acc, %z : f32 ${tag3}
          scf.yield %a : f32
        }
        ${finish}
        %inv = arith.divf %one, ${total} : f32 ${tag4}
        %vinv = vector.broadcast %inv : f32 to ${vt}
        scf.for %j = %c0 to %nv step %lanes {
          ${scale_v}
          %y = arith.mulf ${scale_v_f}, %vinv : ${vt} ${tag4}
          ${store_y_v}
        }
        scf.for %j = %nv to %n step %c1 {
          ${scale_s}
          %y = arith.mulf ${scale_s_f}, %inv : f32 ${tag4}
          ${store_y_s}
        }
      }
      return
    }
  }
}
